"""Write a Parley flow as a Twilio Studio flow definition (``flask studio export``).

The definition has Studio's top-level fields (``description``, ``states``,
``initial_state``, ``flags``; https://www.twilio.com/docs/studio/rest-api/v2/flow)
and can be imported into the Studio canvas:

* a message trigger (``incomingMessage``, ``incomingRequest``, ``incomingParent``)
  leads to the flow's ``start`` (an imported flow's first step, which keeps what
  started it, gives each event back its own widget)
* ``say`` → *Send Message* (``media`` as its media URL); ``ask`` with a free-text
  answer → *Send & Wait for Reply* (its ``timeout`` in seconds); a ``branch``
  whose conditions are Studio operators → *Split Based On*; ``set`` →
  *Set Variables*; ``http`` → *Make HTTP Request* (``query`` as a GET's
  parameters, ``form`` as a form, ``json_text`` as a JSON body); ``call`` →
  *Run Subflow*; an imported *Send to Flex* → *Send to Flex*; ``end`` → nothing
  (a transition to it leads nowhere, where Studio ends the execution)
* texts may use ``{{ vars.NAME }}`` (an ``ask`` step's ``save_as`` becomes
  ``{{widgets.<ask>.inbound.Body}}``, any other variable
  ``{{flow.variables.NAME}}``), and Liquid stays Liquid: an imported flow's
  ``{{ "…" | liquid }}`` is written back as the Liquid it holds
* every other step (``llm``, ``paywall``, typed ``ask``, Jinja Studio cannot
  read…) → a *Make HTTP Request* widget named after the step that calls its step
  endpoint (``/studio/flows/<flow>/steps/<step>``), then, for a step that can
  say something, a *Send Message* ``<step>_reply`` of
  ``{{widgets.<step>.parsed.reply}}`` (never an empty one for ``set`` or
  ``branch``), and, when the step can lead to more than one step, a *Split Based
  On* ``<step>_next`` on ``parsed.next``. A step that waits for the contact there
  (a typed ``ask``, an ``llm`` with ``until``) becomes Studio's own *Send & Wait
  for Reply* ``<step>_answer`` whose answer a second request ``<step>_resume``
  passes to the endpoint, again while the step still waits: no exported flow
  loops on an answer it cannot see.

The endpoint's token is not written into the file: the widgets add
``?token={{flow.variables.parley_token}}``, to set in a *Set Variables* widget
or the flow's trigger parameters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from engine.flow import Flow
from integrations.liquid import flow_sid

_VAR = re.compile(r"\{\{\s*vars\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_CONDITION = re.compile(
    r"^\s*(?:\{\{\s*)?vars\.([A-Za-z_][A-Za-z0-9_]*)\s+is\s+([a-z_]+)"
    r"(?:\(\s*'([^'\\{}]*)'\s*\))?\s*(?:\}\})?\s*$"
)
_LIQUID = re.compile(r'^\{\{ (".*") \| liquid \}\}$', re.S)

#: The first step and the end step of an imported flow (studio/importer.py).
TRIGGER_STEP = "studio_trigger"
END_STEP = "studio_end"

#: Step kinds that only compute or route: no *Send Message* of their reply.
_SILENT_KINDS = frozenset({"set", "branch", "http", "call", "goto", "end"})

To = Callable[[str | None], dict[str, str]]


def _state(name: str, kind: str, transitions: list[dict[str, Any]], **props: Any) -> dict:
    return {"name": name, "type": kind, "transitions": transitions, "properties": props}


def export_studio(flow: Flow, base_url: str) -> dict[str, Any]:
    """The Studio flow definition of `flow`.

    Args:
        flow: A loaded, validated flow.
        base_url: Parley's public https URL (``PUBLIC_BASE_URL``), for step endpoints.
    """
    saved = {
        step.save_as: step_id
        for step_id, step in flow.steps.items()
        if step.kind == "ask" and getattr(step, "save_as", None)
    }
    ends = {step_id for step_id, step in flow.steps.items() if step.kind == "end"}

    def to(target: str | None) -> dict[str, str]:
        return {"next": target} if target and target not in ends else {}

    def liquid(text: Any) -> str | None:
        """Studio's Liquid for a flow string, or None when Studio cannot read it."""
        if not isinstance(text, str):
            return None
        held = _liquid_source(text)
        if held is not None:
            return held

        def swap(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in saved:
                return "{{widgets." + saved[name] + ".inbound.Body}}"
            return "{{flow.variables." + name + "}}"

        converted = _VAR.sub(swap, text)
        rest = _VAR.sub("", text)
        return None if "{{" in rest or "{%" in rest else converted

    states = [_trigger(flow, to)]
    flex_steps = _flex_handovers(flow)
    for step_id, step in flow.steps.items():
        if step.kind == "end" or step_id == TRIGGER_STEP or step_id in flex_steps.values():
            continue
        native = _native(flow, step_id, step, liquid, to, saved, flex_steps)
        states.extend(
            native if native is not None else _endpoint(flow, step_id, step, base_url, to)
        )
    return {
        "description": flow.description or flow.id,
        "states": states,
        "initial_state": "Trigger",
        "flags": {"allow_concurrent_calls": True},
    }


def _liquid_source(text: str) -> str | None:
    """The Liquid an imported flow string holds (``{{ "…" | liquid }}``), else None."""
    match = _LIQUID.match(text)
    if match is None:
        return None
    try:
        value = json.loads(match.group(1))
    except ValueError:
        return None
    return value if isinstance(value, str) else None


def _trigger(flow: Flow, to: To) -> dict[str, Any]:
    """The trigger widget: each messaging event where the flow starts it."""
    events = dict.fromkeys(("incomingMessage", "incomingRequest", "incomingParent"), flow.start)
    first = flow.steps.get(TRIGGER_STEP)
    if first is not None and flow.start == TRIGGER_STEP:
        event = first.set.get("studio_trigger_event")  # type: ignore[union-attr]
        nxt = first.next
        if isinstance(nxt, list):  # a message and a REST start, to different widgets
            message, other = nxt[0].then, nxt[-1].target
        else:
            message = other = nxt if isinstance(nxt, str) else None
        match = re.findall(r"'(\w+)'", event) if isinstance(event, str) and "'" in event else []
        wired = match or ([event] if isinstance(event, str) else [])
        events = {}
        for name in wired:
            is_message = name in ("incomingMessage", "incomingConversationMessage")
            events[name] = message if is_message else other
    transitions = [
        {"event": name, **to(events.get(name))}
        for name in (
            "incomingMessage",
            "incomingCall",
            "incomingConversationMessage",
            "incomingRequest",
            "incomingParent",
        )
    ]
    return _state("Trigger", "trigger", transitions, offset={"x": 0, "y": 0})


def _flex_handovers(flow: Flow) -> dict[str, str]:
    """Imported *Send to Flex* widgets: the ``set`` of ``studio_flex`` → its handover step."""
    found = {}
    for step_id, step in flow.steps.items():
        values = getattr(step, "set", None)
        target = getattr(step, "next", None)
        flex = isinstance(values, dict) and "studio_flex" in values and isinstance(target, str)
        if flex and flow.steps.get(target) is not None and flow.steps[target].kind == "handover":
            found[step_id] = target
    return found


def _native(
    flow: Flow,
    step_id: str,
    step: Any,
    liquid: Callable[[Any], str | None],
    to: To,
    saved: dict[str, str],
    flex_steps: dict[str, str],
) -> list[dict[str, Any]] | None:
    """The step as Studio's own widget, or None when only its endpoint can run it."""
    simple_next = step.next if isinstance(getattr(step, "next", None), str) else None
    plain_next = getattr(step, "next", None) is None or simple_next is not None
    address = {"from": "{{flow.channel.address}}", "to": "{{contact.channel.address}}"}
    if step.kind == "say" and plain_next and liquid(step.say) is not None:
        props: dict[str, Any] = {"body": liquid(step.say), **address}
        if step.media:
            if liquid(step.media) is None:
                return None
            props["media_url"] = liquid(step.media)
        transitions = [{"event": "sent", **to(simple_next)}, {"event": "failed"}]
        return [_state(step_id, "send-message", transitions, **props)]
    if (
        step.kind == "ask"
        and plain_next
        and step.type == "text"
        and not step.choices
        and liquid(step.ask) is not None
    ):
        timeout = step.timeout
        transitions = [
            {"event": "incomingMessage", **to(simple_next)},
            {"event": "timeout", **to(timeout.next if timeout else None)},
            {"event": "deliveryFailure"},
        ]
        return [
            _state(
                step_id,
                "send-and-wait-for-reply",
                transitions,
                body=liquid(step.ask),
                timeout=str(int(timeout.after.total_seconds()) if timeout else 3600),
                **{"from": "{{flow.channel.address}}"},
            )
        ]
    if step.kind == "branch":
        split = _split(step_id, step.branch, saved, to)
        return [split] if split is not None else None
    if step.kind == "set" and plain_next:
        if step_id in flex_steps:
            return _send_to_flex(step_id, step, flow.steps[flex_steps[step_id]], liquid)
        variables = []
        for key, value in step.set.items():
            text = liquid(value) if isinstance(value, str) else None
            if text is None:
                return None
            variables.append({"key": key, "value": text})
        transitions = [{"event": "next", **to(simple_next)}]
        return [_state(step_id, "set-variables", transitions, variables=variables)]
    if step.kind == "http" and plain_next and step.save_as is None:
        return _http(step_id, step, liquid, to)
    if step.kind == "call" and plain_next and step.save_as is None:
        parameters = []
        for key, value in step.with_.items():
            text = liquid(value) if isinstance(value, str) else None
            if text is None:
                return None
            parameters.append({"key": key, "value": text})
        transitions = [{"event": "completed", **to(simple_next)}, {"event": "failed"}]
        return [
            _state(
                step_id,
                "run-subflow",
                transitions,
                flow_sid=flow_sid(step.call),
                flow_revision="LatestPublished",
                parameters=parameters,
            )
        ]
    return None


def _http(step_id: str, step: Any, liquid: Callable[[Any], str | None], to: To) -> list | None:
    """A *Make HTTP Request*, when every part of the request is Studio's Liquid."""
    spec = step.http
    if spec.headers or spec.json_body is not None or spec.method not in ("GET", "POST"):
        return None
    url = liquid(spec.url)
    parameters = []
    for key, value in {**spec.query, **(spec.form or {})}.items():
        text = liquid(value)
        if text is None:
            return None
        parameters.append({"key": key, "value": text})
    if url is None or (spec.method == "POST" and spec.query):
        return None
    props: dict[str, Any] = {"method": spec.method, "url": url}
    if spec.json_text is not None:
        body = liquid(spec.json_text)
        if body is None:
            return None
        props.update(content_type="application/json;charset=utf-8", body=body)
    else:
        props.update(
            content_type="application/x-www-form-urlencoded;charset=utf-8", parameters=parameters
        )
    success = step.success or (step.next if isinstance(step.next, str) else None)
    transitions = [{"event": "success", **to(success)}, {"event": "failed", **to(step.fail)}]
    return [_state(step_id, "make-http-request", transitions, **props)]


def _send_to_flex(
    step_id: str, step: Any, handover: Any, liquid: Callable[[Any], str | None]
) -> list[dict[str, Any]] | None:
    """An imported *Send to Flex*: its ``set`` of ``studio_flex`` and its handover."""
    flex = step.set.get("studio_flex")
    attributes = liquid(step.set.get("studio_flex_attributes", "{}"))
    if not isinstance(flex, dict) or attributes is None:
        return None
    transitions = [
        {"event": "callComplete"},
        {"event": "failedToEnqueue"},
        {"event": "callFailure"},
    ]
    return [
        _state(
            step_id,
            "send-to-flex",
            transitions,
            workflow=str(flex.get("workflow") or ""),
            channel=str(flex.get("channel") or ""),
            attributes=attributes,
        )
    ]


def _split(step_id: str, branch: list, saved: dict[str, str], to: To) -> dict | None:
    """A *Split Based On*, or None when the conditions are not Studio operators."""
    subject = None
    transitions: list[dict[str, Any]] = []
    otherwise = None
    for transition in branch:
        if transition.if_ is None:
            otherwise = transition.else_
            continue
        conditions = _imported_conditions(transition.if_)
        if conditions is None:
            match = _CONDITION.match(transition.if_)
            if match is None:
                return None
            name, operator, value = match.groups()
            argument = (
                "{{widgets." + saved[name] + ".inbound.Body}}"
                if name in saved
                else "{{flow.variables." + name + "}}"
            )
            conditions = [(argument, operator, value or "")]
        subject = subject or conditions[0][0]
        transitions.append(
            {
                "event": "match",
                **to(transition.then),
                "conditions": [
                    {
                        "friendly_name": f"{operator} {value}".strip(),
                        "arguments": [argument],
                        "type": operator,
                        "value": value,
                    }
                    for argument, operator, value in conditions
                ],
            }
        )
    if subject is None:
        return None
    return _state(
        step_id,
        "split-based-on",
        [{"event": "noMatch", **to(otherwise)}, *transitions],
        input=subject,
    )


def _imported_conditions(source: str) -> list[tuple[str, str, str]] | None:
    """The Studio conditions of an imported ``branch`` condition, or None.

    The importer writes ``{{ ("…" | liquid) is OPERATOR(("…" | liquid)) and … }}``
    (a plain ``"…"`` where there is no Liquid): each part is one condition.
    """
    text = source.strip()
    if not (text.startswith("{{ ") and text.endswith(" }}")):
        return None
    text = text[3:-3]
    decoder = json.JSONDecoder()
    found: list[tuple[str, str, str]] = []

    def value_at(index: int) -> tuple[str, int] | None:
        wrapped = text.startswith("(", index)
        start = index + 1 if wrapped else index
        if not text.startswith('"', start):
            return None
        try:
            value, end = decoder.raw_decode(text, start)
        except ValueError:
            return None
        if wrapped:
            if not text.startswith(" | liquid)", end):
                return None
            end += len(" | liquid)")
        return str(value), end

    index = 0
    while True:
        left = value_at(index)
        if left is None:
            return None
        argument, index = left
        match = re.compile(r" is (\w+)").match(text, index)
        if match is None:
            return None
        operator, index = match.group(1), match.end()
        value = ""
        if text.startswith("(", index):
            right = value_at(index + 1)
            if right is None or not text.startswith(")", right[1]):
                return None
            value, index = right[0], right[1] + 1
        found.append((argument, operator, value))
        if index == len(text):
            return found
        if not text.startswith(" and ", index):
            return None
        index += len(" and ")


def _endpoint(flow: Flow, step_id: str, step: Any, base_url: str, to: To) -> list[dict]:
    """The step through its step endpoint: request, reply, where it leads, and its waits."""
    url = f"{base_url.rstrip('/')}/studio/flows/{flow.id}/steps/{step_id}"
    targets = sorted({target for _, target in step.targets()} - {step_id})
    states: list[dict[str, Any]] = []

    def request(name: str, body: str, then: str) -> dict[str, Any]:
        return _state(
            name,
            "make-http-request",
            [{"event": "success", "next": then}, {"event": "failed"}],
            method="POST",
            content_type="application/x-www-form-urlencoded;charset=utf-8",
            url=url + "?token={{flow.variables.parley_token}}",
            parameters=[
                {"key": "From", "value": "{{contact.channel.address}}"},
                {"key": "Body", "value": body},
            ],
        )

    def after(widget: str) -> str | None:
        """Where a request's answer goes on once the step is done: reply, then next."""
        says = step.kind not in _SILENT_KINDS
        decide = f"{widget}_next" if len(targets) > 1 else None
        onward = decide or (targets[0] if targets else None)
        if decide:
            states.append(_next_split(decide, widget, targets, to))
        if not says:
            return onward
        reply = f"{widget}_reply"
        transitions = [{"event": "sent", **to(onward)}, {"event": "failed"}]
        states.append(
            _state(
                reply,
                "send-message",
                transitions,
                body="{{widgets." + widget + ".parsed.reply}}",
                to="{{contact.channel.address}}",
            )
        )
        return reply

    if not step.waits:
        states.append(request(step_id, "{{trigger.message.Body}}", ""))
        then = after(step_id)
        states[0]["transitions"][0] = {"event": "success", **to(then)}
        return states
    # A step that waits: Studio asks (its own Send & Wait for Reply) and passes
    # the answer to the endpoint, again while the step still waits.
    answer, resume = f"{step_id}_answer", f"{step_id}_resume"
    states.append(request(step_id, "{{trigger.message.Body}}", f"{step_id}_waits"))
    states.append(_waiting_split(f"{step_id}_waits", step_id, answer, to))
    states.append(
        _state(
            answer,
            "send-and-wait-for-reply",
            [{"event": "incomingMessage", "next": resume}, {"event": "timeout"}],
            body="{{widgets."
            + resume
            + ".parsed.reply | default: widgets."
            + step_id
            + ".parsed.reply}}",
            timeout="3600",
            **{"from": "{{flow.channel.address}}"},
        )
    )
    states.append(request(resume, "{{widgets." + answer + ".inbound.Body}}", f"{resume}_waits"))
    states.append(_waiting_split(f"{resume}_waits", resume, answer, to))
    done_first = after(step_id)
    done_resume = after(resume)
    for state, done in ((states[1], done_first), (states[4], done_resume)):
        state["transitions"][0] = {"event": "noMatch", **to(done)}
    return states


def _waiting_split(name: str, widget: str, answer: str, to: To) -> dict[str, Any]:
    """Wait again at `answer` while the endpoint says the step waits."""
    argument = "{{widgets." + widget + ".parsed.waiting}}"
    condition = {
        "friendly_name": "waiting",
        "arguments": [argument],
        "type": "equal_to",
        "value": "true",
    }
    return _state(
        name,
        "split-based-on",
        [{"event": "noMatch"}, {"event": "match", **to(answer), "conditions": [condition]}],
        input=argument,
    )


def _next_split(name: str, widget: str, targets: list[str], to: To) -> dict[str, Any]:
    """Go where the endpoint's ``parsed.next`` says."""
    argument = "{{widgets." + widget + ".parsed.next}}"
    return _state(
        name,
        "split-based-on",
        [{"event": "noMatch"}]
        + [
            {
                "event": "match",
                **to(target),
                "conditions": [
                    {
                        "friendly_name": target,
                        "arguments": [argument],
                        "type": "equal_to",
                        "value": target,
                    }
                ],
            }
            for target in targets
        ],
        input=argument,
    )
