"""Turn a Twilio Studio flow definition into a Parley flow (``flask studio import``).

The Studio JSON (https://www.twilio.com/docs/studio/rest-api/v2/flow: ``description``,
``states``, ``initial_state``, ``flags``) becomes a flow dict ready for YAML:

* ``trigger``: the flow starts where its trigger's messaging events
  (``incomingMessage``, ``incomingConversationMessage``, ``incomingRequest``,
  ``incomingParent``) lead: a message where the message event leads, a start
  with no message (``POST /api/v1/executions``) where the REST one does. With
  `numbers` the flow is bound to those numbers and starts on any message there,
  as a Studio flow does on its number; without, its id is its keyword.
* ``send-message`` → ``say`` (with ``media``); ``send-and-wait-for-reply`` → ``ask``
  (free text, its ``timeout`` in seconds kept as ``timeout: {after, next}``; a
  timeout Studio leaves unwired ends the execution, as Studio does)
* ``split-based-on`` → ``branch``: every condition an operator test
  (engine/operators.py), conditions of one transition joined with ``and``,
  ``noMatch`` the ``else``
* ``set-variables`` → ``set``; ``make-http-request`` → ``http`` (a GET's
  parameters as the query string; a POST's as a form, or its body as JSON text,
  per ``content_type``); ``run-function`` → an ``http`` POST to the function's
  URL (under ``functions_url`` when given: the exported URL's path, or
  ``/<widget name>`` when the export has none; with no URL at all it takes its
  ``fail`` transition, reported); ``run-subflow`` → ``call`` (Studio flow SIDs
  mapped to Parley flow ids by `subflows`); ``send-to-flex`` → a ``set`` of
  ``studio_flex`` (workflow, channel) and ``studio_flex_attributes`` (the
  rendered attributes JSON), then a ``handover`` to the
  queue named by the workflow, where the contact stays until an agent answers
* a ``failed``/``fail`` or ``noMatch`` transition Studio leaves unwired ends
  the execution silently, as Studio does (no fallback text)
* the flow says ``responders: false``: no opt-out keyword, reset code, welcome
  or after-hours reply answers for it (Studio has no global keywords; on SMS,
  Twilio's Messaging Service answers STOP/START/HELP itself)

Every Studio template stays Liquid and is rendered at run time by the
``liquid`` filter (integrations/liquid.py). A widget that cannot be imported
(voice-only, an unknown type, a missing URL…) is named in the report with why,
and becomes a ``set`` step that passes on to where its first transition led, so
the rest of the flow still runs. What the import changed from a literal
translation, and why, is in `Imported.changes`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from engine.operators import OPERATORS
from integrations.liquid import DATA_VARIABLE, EVENT_VARIABLE

#: Trigger events of the messaging channels.
MESSAGE_EVENTS = (
    "incomingMessage",
    "incomingConversationMessage",
    "incomingRequest",
    "incomingParent",
)

#: Studio widget types that only work in a voice call.
VOICE_WIDGETS = frozenset(
    {
        "say-play",
        "gather-input-on-call",
        "connect-call-to",
        "record-voicemail",
        "record-call",
        "enqueue-call",
        "fork-stream",
        "make-outgoing-call-v2",
        "capture-payments",
        "add-twiml-redirect",
        "connect-virtual-agent",
    }
)

#: The step that ends the flow where Studio's transition leads nowhere.
END_STEP = "studio_end"

#: The first step: keeps the message that started the flow (``trigger.message.Body``).
TRIGGER_STEP = "studio_trigger"

#: The variable that keeps it (integrations/liquid.py reads it).
TRIGGER_BODY = "studio_trigger_body"


class StudioImportError(ValueError):
    """The file is not a Studio flow definition (the message says why)."""


@dataclass
class Skipped:
    """A widget that was not imported.

    Attributes:
        widget: The widget's name.
        type: Its Studio type.
        reason: Why.
    """

    widget: str
    type: str
    reason: str


@dataclass
class Imported:
    """The result: the flow (a dict for YAML) and what was left out."""

    flow: dict[str, Any]
    skipped: list[Skipped] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    """Problems the Studio flow has itself (a template naming a widget that does not exist)."""
    changes: list[str] = field(default_factory=list)
    """What the import did beyond a literal translation, and why (Studio's defaults)."""


def liquid(source: Any) -> Any:
    """A Parley flow string that renders `source` (a Studio template) with Liquid."""
    text = str(source)
    if "{" not in text:
        return text
    return "{{ " + json.dumps(text, ensure_ascii=False) + " | liquid }}"


def _expression(source: Any) -> str:
    """A Jinja expression of a Studio value (a template or plain text)."""
    text = str(source)
    quoted = json.dumps(text, ensure_ascii=False)
    return f"({quoted} | liquid)" if "{" in text else quoted


def _seconds(value: Any) -> str | None:
    try:
        seconds = int(float(value))
    except (TypeError, ValueError):
        return None
    return f"{seconds}s" if seconds > 0 else None


def import_studio(
    definition: Mapping[str, Any],
    flow_id: str,
    *,
    functions_url: str | None = None,
    subflows: Mapping[str, str] | None = None,
    numbers: list[str] | None = None,
) -> Imported:
    """Import a Studio flow definition.

    Args:
        definition: The parsed Studio JSON.
        flow_id: The Parley flow id (``^[a-z0-9][a-z0-9_-]*$``).
        functions_url: The Twilio Functions base URL (``https://x-1234.twil.io``)
            that ``run-function`` widgets call (their path kept).
        subflows: Studio flow SIDs (``FW…``) → Parley flow ids, for ``run-subflow``.
        numbers: The numbers the flow answers on (``whatsapp:+1…``, ``+1…``),
            as a Studio flow is bound to its number: it is their default flow.

    Returns:
        The flow and the widgets not imported.

    Raises:
        StudioImportError: no ``states`` list, no trigger, or no messaging trigger.
    """
    states = definition.get("states")
    if not isinstance(states, list) or not states:
        raise StudioImportError("not a Studio flow definition: `states` is missing or empty")
    names = {state.get("name") for state in states if isinstance(state, Mapping)}
    result = Imported(flow={})
    steps: dict[str, Any] = {}
    ends = _Ends()
    starts: dict[str, str] = {}
    variables: dict[str, Any] = {}
    voice: set[str] = set()

    def target(name: Any) -> str | None:
        return name if isinstance(name, str) and name in names else None

    for state in states:
        name, kind = str(state.get("name")), str(state.get("type"))
        props = state.get("properties") or {}
        for widget in sorted(set(re.findall(r"widgets\.([\w-]+)", json.dumps(props))) - names):
            result.warnings.append(
                f"{name}: its templates name widget {widget!r}, which is not in the flow"
            )
        transitions = {
            t.get("event"): target(t.get("next")) for t in state.get("transitions") or []
        }
        if kind == "trigger":
            starts = {e: to for e in MESSAGE_EVENTS if (to := transitions.get(e))}
            ignored = [e for e, to in transitions.items() if to and e not in MESSAGE_EVENTS]
            for event in ignored:
                result.skipped.append(Skipped(name, kind, f"trigger {event!r} is voice-only"))
            continue
        try:
            step = _step(
                kind,
                props,
                transitions,
                list(state.get("transitions") or []),
                names,
                name,
                functions_url,
                subflows or {},
                ends,
                result,
            )
        except _NotImported as problem:
            result.skipped.append(Skipped(name, kind, str(problem)))
            if kind in VOICE_WIDGETS:
                voice.add(name)
            first = next((to for to in transitions.values() if to), None)
            step = {"set": {"studio_skipped": name}}
            if first:
                step["next"] = first
        if kind == "send-to-flex" and "handover" in step:
            steps[name] = {"set": step.pop("_flex"), "next": f"{name}_flex"}
            steps[f"{name}_flex"] = step
            continue
        steps[name] = step
    if not starts:
        raise StudioImportError("the flow has no messaging trigger leading to a widget")
    reachable: set[str] = set()
    for start in starts.values():
        reachable |= _reachable(steps, start)
    for name in [name for name in steps if name not in reachable]:
        if name.endswith("_flex") and name.removesuffix("_flex") in reachable:
            continue
        if name not in voice:  # reported once, as voice-only
            kind = next((str(s.get("type")) for s in states if s.get("name") == name), "?")
            result.skipped.append(Skipped(name, kind, "unreachable from the messaging trigger"))
        del steps[name]
    if ends.used:
        steps[END_STEP] = {"end": True}
    steps = {TRIGGER_STEP: _trigger_step(starts), **steps}
    variables[TRIGGER_BODY] = ""
    flow: dict[str, Any] = {
        "id": flow_id,
        "description": str(definition.get("description") or f"Imported from Studio: {flow_id}"),
    }
    if numbers:
        flow["numbers"] = list(numbers)
        flow["trigger"] = {"default": True}
        result.changes.append(
            f"bound to {', '.join(numbers)}: any message there starts the flow, as on "
            "Studio's number"
        )
    else:
        flow["trigger"] = {"keywords": [flow_id]}
        result.changes.append(
            f"starts on the keyword {flow_id!r}; bind it to its number (--number) and any "
            "message there starts it, as in Studio"
        )
    flow["responders"] = False
    result.changes.append(
        "responders: false: no opt-out keyword, reset code, welcome or after-hours reply "
        "answers before it (Studio has none; on SMS, Twilio answers STOP/START/HELP itself)"
    )
    result.changes.extend(ends.reasons())
    variables.setdefault("studio_skipped", "")
    flow["variables"] = variables
    flow["start"] = TRIGGER_STEP
    flow["steps"] = steps
    result.flow = flow
    return result


def _trigger_step(starts: Mapping[str, str]) -> dict[str, Any]:
    """The first step: keeps what started the flow, then goes where that event leads.

    A turn with an inbound message is a message event (``incomingMessage``, else
    ``incomingConversationMessage``); one with none is ``incomingRequest`` (a
    start through ``POST /api/v1/executions``), else ``incomingParent``.
    """
    message = next((e for e in MESSAGE_EVENTS[:2] if e in starts), None)
    other = next((e for e in MESSAGE_EVENTS[2:] if e in starts), None)
    keep: dict[str, Any] = {
        TRIGGER_BODY: "{{ input.text }}",
        DATA_VARIABLE: "{{ dict(vars) }}",
    }
    if message and other:
        keep[EVENT_VARIABLE] = f"{{{{ '{message}' if input.channel is defined else '{other}' }}}}"
        if starts[message] == starts[other]:
            return {"set": keep, "next": starts[message]}
        return {
            "set": keep,
            "next": [
                {"if": "input.channel is defined", "then": starts[message]},
                {"else": starts[other]},
            ],
        }
    event = message or other
    assert event is not None
    keep[EVENT_VARIABLE] = event
    return {"set": keep, "next": starts[event]}


class _Ends:
    """Where Studio ends an execution silently: the transitions left unwired, counted."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    @property
    def used(self) -> bool:
        return bool(self.counts)

    def end(self, why: str) -> str:
        self.counts[why] = self.counts.get(why, 0) + 1
        return END_STEP

    def reasons(self) -> list[str]:
        return [
            f"{count} unwired {why} transition(s) end the execution silently, as in Studio"
            for why, count in sorted(self.counts.items())
        ]


class _NotImported(Exception):
    pass


def _targets(step: Mapping[str, Any]) -> list[str]:
    found = [step.get(key) for key in ("next", "success", "fail")]
    found.append((step.get("timeout") or {}).get("next"))
    for branch in step.get("branch") or []:
        found.append(branch.get("then", branch.get("else")))
    return [name for name in found if isinstance(name, str)]


def _reachable(steps: Mapping[str, Any], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen or name not in steps:
            continue
        seen.add(name)
        todo.extend(_targets(steps[name]))
    return seen


def _step(
    kind: str,
    props: Mapping[str, Any],
    transitions: Mapping[str, str | None],
    raw: list[Mapping[str, Any]],
    names: set,
    name: str,
    functions_url: str | None,
    subflows: Mapping[str, str],
    ends: _Ends,
    result: Imported,
) -> dict[str, Any]:
    """One widget as a Parley step. Raises `_NotImported` with the reason."""
    if kind in VOICE_WIDGETS:
        raise _NotImported("voice-only widget")
    if kind == "send-message":
        step: dict[str, Any] = {"say": liquid(props.get("body", ""))}
        if props.get("media_url"):
            step["media"] = liquid(props["media_url"])
        return _then(step, transitions.get("sent"))
    if kind == "send-and-wait-for-reply":
        step = {"ask": liquid(props.get("body", ""))}
        after = _seconds(props.get("timeout")) or "3600s"  # Studio's default: an hour
        timeout = transitions.get("timeout") or ends.end("timeout")
        step["timeout"] = {"after": after, "next": timeout}
        return _then(step, transitions.get("incomingMessage"))
    if kind == "split-based-on":
        return _split(props, raw, names, ends)
    if kind == "set-variables":
        values = {}
        for item in props.get("variables") or []:
            key = str(item.get("key", ""))
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise _NotImported(f"variable name {key!r} is not a Parley name")
            values[key] = liquid(item.get("value", ""))
        return _then({"set": values}, transitions.get("next"))
    if kind == "make-http-request":
        spec = _http(props)
        failed = transitions.get("failed") or ends.end("failed")
        return _http_step(spec, transitions.get("success"), failed)
    if kind == "run-function":
        url = str(props.get("url") or "")
        if functions_url:  # the export's path kept, else the widget's name
            url = functions_url.rstrip("/") + (urlsplit(url).path if url else f"/{name}")
        if not url:
            result.skipped.append(
                Skipped(
                    name,
                    kind,
                    "no function URL: it takes its `fail` transition (give --functions-url, "
                    "or export the flow after deploying the function)",
                )
            )
            # Without a `fail` transition, the flow ends there, silently (no `next`).
            return _then({"set": {"studio_skipped": name}}, transitions.get("fail"))
        failed = transitions.get("fail") or ends.end("fail")
        form = {
            str(p.get("key")): liquid(p.get("value", "")) for p in props.get("parameters") or []
        }
        spec = {"method": "POST", "url": url, **({"form": form} if form else {})}
        return _http_step(spec, transitions.get("success"), failed)
    if kind == "run-subflow":
        sid = str(props.get("flow_sid") or "")
        if sid not in subflows:
            raise _NotImported(f"subflow {sid or '?'} is not mapped to a Parley flow (--subflow)")
        step = {"call": subflows[sid]}
        given = {
            str(p.get("key")): liquid(p.get("value", "")) for p in props.get("parameters") or []
        }
        if given:
            step["with"] = given
        return _then(step, transitions.get("completed"))
    if kind == "send-to-flex":
        workflow = str(props.get("workflow") or "")
        flex = {
            # Stored as written (a `set` does not render a mapping's values).
            "studio_flex": {"workflow": workflow, "channel": str(props.get("channel") or "")},
            "studio_flex_attributes": liquid(props.get("attributes") or "{}"),
        }
        # The contact waits in the workflow's queue until an agent answers (Studio's
        # Flex task); `handover/expiry.py` never hands a `queue:WW…` back to the bot.
        return {"handover": f"queue:{workflow or 'flex'}", "_flex": flex}
    raise _NotImported(f"widget type {kind!r} is not supported")


def _then(step: dict[str, Any], to: str | None) -> dict[str, Any]:
    if to:
        step["next"] = to
    return step


def _http(props: Mapping[str, Any]) -> dict[str, Any]:
    """A *Make HTTP Request* as Studio sends it: a GET's parameters in the query
    string; a POST's as a form, or its body as JSON text, per ``content_type``."""
    method = str(props.get("method") or "GET").upper()
    url = str(props.get("url") or "")
    if not url:
        raise _NotImported("no URL")
    spec: dict[str, Any] = {"method": method, "url": liquid(url)}
    content_type = str(props.get("content_type") or "")
    parameters = {
        str(p.get("key")): liquid(p.get("value", "")) for p in props.get("parameters") or []
    }
    if method == "GET":
        if parameters:
            spec["query"] = parameters
        return spec
    if "json" in content_type:
        spec["json_text"] = liquid(str(props.get("body") or "{}"))
    elif parameters:
        spec["form"] = parameters
    return spec


def _http_step(spec: dict[str, Any], success: str | None, fail: str | None) -> dict[str, Any]:
    step: dict[str, Any] = {"http": spec}
    if success:
        step["success"] = success
    if fail:
        step["fail"] = fail
    return step


def _split(
    props: Mapping[str, Any], raw: list[Mapping[str, Any]], names: set, ends: _Ends
) -> dict[str, Any]:
    """``split-based-on`` → ``branch``; a transition leading nowhere ends the flow."""
    subject = props.get("input", "")
    branches: list[dict[str, str]] = []
    otherwise = None
    for transition in raw:
        to = transition.get("next") if transition.get("next") in names else None
        if transition.get("event") == "noMatch":
            otherwise = to
            continue
        tests = []
        for condition in transition.get("conditions") or []:
            operator = str(condition.get("type"))
            if operator not in OPERATORS:
                raise _NotImported(f"operator {operator!r} is not supported")
            arguments = condition.get("arguments") or [subject]
            left = _expression(arguments[0])
            if operator in ("is_blank", "is_not_blank"):
                tests.append(f"{left} is {operator}")
            else:
                tests.append(f"{left} is {operator}({_expression(condition.get('value', ''))})")
        if tests:
            condition = "{{ " + " and ".join(tests) + " }}"
            branches.append({"if": condition, "then": to or ends.end("match")})
    branches.append({"else": otherwise or ends.end("noMatch")})
    return {"branch": branches}
