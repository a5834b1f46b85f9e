"""Turn a Twilio Studio flow definition into a Parley flow (``flask studio import``).

The Studio JSON (https://www.twilio.com/docs/studio/rest-api/v2/flow: ``description``,
``states``, ``initial_state``, ``flags``) becomes a flow dict ready for YAML:

* ``trigger``: the flow starts where its message trigger (``incomingMessage``,
  ``incomingConversationMessage``, ``incomingRequest``, ``incomingParent``) leads
* ``send-message`` → ``say`` (with ``media``); ``send-and-wait-for-reply`` → ``ask``
  (free text, its ``timeout`` in seconds kept as ``timeout: {after, next}``)
* ``split-based-on`` → ``branch``: every condition an operator test
  (engine/operators.py), conditions of one transition joined with ``and``,
  ``noMatch`` the ``else``
* ``set-variables`` → ``set``; ``make-http-request`` → ``http`` (JSON or form);
  ``run-function`` → an ``http`` POST to the function's URL (under
  ``functions_url`` when given: the exported URL's path, or ``/<widget name>``
  when the export has none); ``run-subflow`` → ``call`` (Studio flow SIDs
  mapped to Parley flow ids by `subflows`); ``send-to-flex`` → ``handover``

Every Studio template stays Liquid and is rendered at run time by the
``liquid`` filter (integrations/liquid.py). A widget that cannot be imported
(voice-only, an unknown type, a missing URL…) is named in the report with why,
and becomes a ``set`` step that passes on to where its first transition led, so
the rest of the flow still runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from engine.operators import OPERATORS

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
) -> Imported:
    """Import a Studio flow definition.

    Args:
        definition: The parsed Studio JSON.
        flow_id: The Parley flow id (``^[a-z0-9][a-z0-9_-]*$``).
        functions_url: The Twilio Functions base URL (``https://x-1234.twil.io``)
            that ``run-function`` widgets call (their path kept).
        subflows: Studio flow SIDs (``FW…``) → Parley flow ids, for ``run-subflow``.

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
    needs_end = False
    start = None
    variables: dict[str, Any] = {}

    def target(name: Any) -> str | None:
        return name if isinstance(name, str) and name in names else None

    for state in states:
        name, kind = str(state.get("name")), str(state.get("type"))
        props = state.get("properties") or {}
        for widget in sorted(set(re.findall(r"widgets\.(\w+)", json.dumps(props))) - names):
            result.warnings.append(
                f"{name}: its templates name widget {widget!r}, which is not in the flow"
            )
        transitions = {
            t.get("event"): target(t.get("next")) for t in state.get("transitions") or []
        }
        if kind == "trigger":
            for event in MESSAGE_EVENTS:
                if transitions.get(event):
                    start = transitions[event]
                    break
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
                variables,
            )
        except _NotImported as problem:
            result.skipped.append(Skipped(name, kind, str(problem)))
            first = next((to for to in transitions.values() if to), None)
            step = {"set": {"studio_skipped": name}}
            if first:
                step["next"] = first
        if step.pop("_needs_end", False):
            needs_end = True
        steps[name] = step
    if start is None:
        raise StudioImportError("the flow has no messaging trigger leading to a widget")
    reachable = _reachable(steps, start)
    for name in [name for name in steps if name not in reachable]:
        kind = next(str(s.get("type")) for s in states if s.get("name") == name)
        result.skipped.append(Skipped(name, kind, "unreachable from the messaging trigger"))
        del steps[name]
    if needs_end:
        steps[END_STEP] = {"end": True}
    # Studio's `trigger.message.Body` is the message that started the flow: keep it.
    steps = {TRIGGER_STEP: {"set": {TRIGGER_BODY: "{{ input.text }}"}, "next": start}, **steps}
    start = TRIGGER_STEP
    variables[TRIGGER_BODY] = ""
    flow: dict[str, Any] = {
        "id": flow_id,
        "description": str(definition.get("description") or f"Imported from Studio: {flow_id}"),
        "trigger": {"keywords": [flow_id]},
    }
    variables.setdefault("studio_skipped", "")
    flow["variables"] = variables
    flow["start"] = start
    flow["steps"] = steps
    result.flow = flow
    return result


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
    variables: dict[str, Any],
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
        after = _seconds(props.get("timeout"))
        if after and transitions.get("timeout"):
            step["timeout"] = {"after": after, "next": transitions["timeout"]}
        return _then(step, transitions.get("incomingMessage"))
    if kind == "split-based-on":
        return _split(props, raw, names)
    if kind == "set-variables":
        values = {}
        for item in props.get("variables") or []:
            key = str(item.get("key", ""))
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
                raise _NotImported(f"variable name {key!r} is not a Parley name")
            values[key] = liquid(item.get("value", ""))
            variables.setdefault(key, "")
        return _then({"set": values}, transitions.get("next"))
    if kind == "make-http-request":
        spec = _http(props)
        return _http_step(spec, transitions.get("success"), transitions.get("failed"))
    if kind == "run-function":
        url = str(props.get("url") or "")
        if functions_url:  # the export's path kept, else the widget's name
            url = functions_url.rstrip("/") + (urlsplit(url).path if url else f"/{name}")
        if not url:
            raise _NotImported("no function URL (export the flow after deploying the function)")
        form = {
            str(p.get("key")): liquid(p.get("value", "")) for p in props.get("parameters") or []
        }
        spec = {"method": "POST", "url": url, **({"form": form} if form else {})}
        return _http_step(spec, transitions.get("success"), transitions.get("fail"))
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
        return {"handover": "available"}
    raise _NotImported(f"widget type {kind!r} is not supported")


def _then(step: dict[str, Any], to: str | None) -> dict[str, Any]:
    if to:
        step["next"] = to
    return step


def _http(props: Mapping[str, Any]) -> dict[str, Any]:
    method = str(props.get("method") or "GET").upper()
    url = str(props.get("url") or "")
    if not url:
        raise _NotImported("no URL")
    spec: dict[str, Any] = {"method": method, "url": liquid(url)}
    content_type = str(props.get("content_type") or "")
    if method == "GET":
        return spec
    if "json" in content_type:
        body = str(props.get("body") or "{}")
        outputs: list[str] = []

        def hold(match: re.Match[str]) -> str:
            outputs.append(match.group(0))
            return f"@@studio{len(outputs) - 1}@@"

        # Liquid outputs become placeholders (quoted where they stand bare,
        # e.g. `"n": {{x}}`) so that the JSON skeleton parses.
        skeleton = re.sub(r"\{\{.*?\}\}|\{%.*?%\}", hold, body, flags=re.S)
        skeleton = re.sub(r"([:\[,]\s*)(@@studio\d+@@)", r'\1"\2"', skeleton)
        try:
            data = json.loads(skeleton)
        except json.JSONDecodeError as error:
            raise _NotImported(f"the JSON body does not parse: {error}") from None
        if not isinstance(data, dict):
            raise _NotImported("the JSON body is not an object")
        spec["json"] = _fill(data, outputs)
    else:
        form = {
            str(p.get("key")): liquid(p.get("value", "")) for p in props.get("parameters") or []
        }
        if form:
            spec["form"] = form
    return spec


def _fill(value: Any, outputs: list[str]) -> Any:
    if isinstance(value, dict):
        return {key: _fill(item, outputs) for key, item in value.items()}
    if isinstance(value, list):
        return [_fill(item, outputs) for item in value]
    if isinstance(value, str):
        source = re.sub(r"@@studio(\d+)@@", lambda m: outputs[int(m.group(1))], value)
        return liquid(source)
    return value


def _http_step(spec: dict[str, Any], success: str | None, fail: str | None) -> dict[str, Any]:
    step: dict[str, Any] = {"http": spec}
    if success:
        step["success"] = success
    if fail:
        step["fail"] = fail
    return step


def _split(props: Mapping[str, Any], raw: list[Mapping[str, Any]], names: set) -> dict[str, Any]:
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
            branches.append({"if": condition, "then": to or END_STEP})
    branches.append({"else": otherwise or END_STEP})
    ends = any(branch.get("then", branch.get("else")) == END_STEP for branch in branches)
    return {"branch": branches, "_needs_end": ends}
