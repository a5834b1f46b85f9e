"""Write a Parley flow as a Twilio Studio flow definition (``flask studio export``).

The definition has Studio's top-level fields (``description``, ``states``,
``initial_state``, ``flags``; https://www.twilio.com/docs/studio/rest-api/v2/flow)
and can be imported into the Studio canvas:

* a message trigger (``incomingMessage``, ``incomingRequest``, ``incomingParent``)
  leads to the flow's ``start``
* ``say`` → *Send Message*; ``ask`` with a free-text answer → *Send & Wait for
  Reply* (its ``timeout`` in seconds); a ``branch`` whose conditions are
  ``vars.X is OPERATOR('value')`` → *Split Based On*; ``end`` → nothing (a
  transition to it leads nowhere)
* every other step (``llm``, ``paywall``, ``http``, ``set``, typed ``ask``,
  templates Studio cannot read…) → a *Make HTTP Request* widget named after the
  step that calls its step endpoint (``/studio/flows/<flow>/steps/<step>``), a
  *Send Message* ``<step>_reply`` of ``{{widgets.<step>.parsed.reply}}``, and,
  when the step can lead to more than one step, a *Split Based On*
  ``<step>_next`` on ``parsed.next``. A step that waits for an answer there
  (a typed ``ask``, an ``llm`` with ``until``) is not looped back yet: the
  designer wires the answer to the step's widget again in the canvas.

Texts may use ``{{ vars.NAME }}`` (an ``ask`` step's ``save_as`` becomes
``{{widgets.<ask>.inbound.Body}}``, any other variable
``{{flow.variables.NAME}}``); any other template goes through the step endpoint.
The endpoint's token is not written into the file: the widgets add
``?token={{flow.variables.parley_token}}``, to set in a *Set Variables* widget
or the flow's trigger parameters.
"""

from __future__ import annotations

import re
from typing import Any

from engine.flow import Flow

_VAR = re.compile(r"\{\{\s*vars\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_CONDITION = re.compile(
    r"^\s*(?:\{\{\s*)?vars\.([A-Za-z_][A-Za-z0-9_]*)\s+is\s+([a-z_]+)"
    r"(?:\(\s*'([^'\\{}]*)'\s*\))?\s*(?:\}\})?\s*$"
)


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

    def liquid(text: str) -> str | None:
        def swap(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in saved:
                return "{{widgets." + saved[name] + ".inbound.Body}}"
            return "{{flow.variables." + name + "}}"

        converted = _VAR.sub(swap, text)
        rest = _VAR.sub("", text)
        return None if "{{" in rest or "{%" in rest else converted

    trigger_next = to(flow.start)
    states = [
        _state(
            "Trigger",
            "trigger",
            [
                {"event": "incomingMessage", **trigger_next},
                {"event": "incomingCall"},
                {"event": "incomingConversationMessage"},
                {"event": "incomingRequest", **trigger_next},
                {"event": "incomingParent", **trigger_next},
            ],
            offset={"x": 0, "y": 0},
        )
    ]
    for step_id, step in flow.steps.items():
        simple_next = step.next if isinstance(getattr(step, "next", None), str) else None
        plain_next = getattr(step, "next", None) is None or simple_next is not None
        if step.kind == "end":
            continue
        if step.kind == "say" and plain_next and not step.media and liquid(step.say) is not None:
            states.append(
                _state(
                    step_id,
                    "send-message",
                    [{"event": "sent", **to(simple_next)}, {"event": "failed"}],
                    body=liquid(step.say),
                    to="{{contact.channel.address}}",
                    **{"from": "{{flow.channel.address}}"},
                )
            )
            continue
        if (
            step.kind == "ask"
            and plain_next
            and step.type == "text"
            and not step.choices
            and liquid(step.ask) is not None
        ):
            timeout = step.timeout
            states.append(
                _state(
                    step_id,
                    "send-and-wait-for-reply",
                    [
                        {"event": "incomingMessage", **to(simple_next)},
                        {"event": "timeout", **to(timeout.next if timeout else None)},
                        {"event": "deliveryFailure"},
                    ],
                    body=liquid(step.ask),
                    timeout=str(int(timeout.after.total_seconds()) if timeout else 3600),
                    **{"from": "{{flow.channel.address}}"},
                )
            )
            continue
        if step.kind == "branch":
            split = _split(step_id, step.branch, saved, to)
            if split is not None:
                states.append(split)
                continue
        states.extend(_endpoint(flow, step_id, step, base_url, to))
    return {
        "description": flow.description or flow.id,
        "states": states,
        "initial_state": "Trigger",
        "flags": {"allow_concurrent_calls": True},
    }


def _split(step_id: str, branch: list, saved: dict[str, str], to) -> dict | None:
    """A *Split Based On* of one variable, or None when the conditions are not that simple."""
    subject = None
    transitions: list[dict[str, Any]] = []
    otherwise = None
    for transition in branch:
        if transition.if_ is None:
            otherwise = transition.else_
            continue
        match = _CONDITION.match(transition.if_)
        if match is None:
            return None
        name, operator, value = match.groups()
        if subject not in (None, name):
            return None
        subject = name
        argument = (
            "{{widgets." + saved[name] + ".inbound.Body}}"
            if name in saved
            else "{{flow.variables." + name + "}}"
        )
        condition = {
            "friendly_name": f"{operator} {value or ''}".strip(),
            "arguments": [argument],
            "type": operator,
            "value": value or "",
        }
        transitions.append({"event": "match", **to(transition.then), "conditions": [condition]})
    if subject is None:
        return None
    return _state(
        step_id,
        "split-based-on",
        [{"event": "noMatch", **to(otherwise)}, *transitions],
        input=transitions[0]["conditions"][0]["arguments"][0],
    )


def _endpoint(flow: Flow, step_id: str, step: Any, base_url: str, to) -> list[dict[str, Any]]:
    """The step through its step endpoint: request, reply, then where it leads."""
    url = f"{base_url.rstrip('/')}/studio/flows/{flow.id}/steps/{step_id}"
    targets = sorted({target for _, target in step.targets()})
    reply = f"{step_id}_reply"
    states = [
        _state(
            step_id,
            "make-http-request",
            [{"event": "success", "next": reply}, {"event": "failed"}],
            method="POST",
            content_type="application/x-www-form-urlencoded;charset=utf-8",
            url=url + "?token={{flow.variables.parley_token}}",
            parameters=[
                {"key": "From", "value": "{{contact.channel.address}}"},
                {"key": "Body", "value": "{{trigger.message.Body}}"},
            ],
        )
    ]
    if len(targets) <= 1:
        states.append(
            _state(
                reply,
                "send-message",
                [{"event": "sent", **to(targets[0] if targets else None)}, {"event": "failed"}],
                body="{{widgets." + step_id + ".parsed.reply}}",
                to="{{contact.channel.address}}",
            )
        )
        return states
    decide = f"{step_id}_next"
    states.append(
        _state(
            reply,
            "send-message",
            [{"event": "sent", "next": decide}, {"event": "failed"}],
            body="{{widgets." + step_id + ".parsed.reply}}",
            to="{{contact.channel.address}}",
        )
    )
    argument = "{{widgets." + step_id + ".parsed.next}}"
    states.append(
        _state(
            decide,
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
    )
    return states
