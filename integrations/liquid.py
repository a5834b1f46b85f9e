"""Twilio Studio's Liquid templates, evaluated with python-liquid inside Parley's flows.

A flow imported from Studio (studio/importer.py) keeps each Studio
template as written and renders it at run time through the ``liquid`` filter::

    say: '{{ "Hi {{flow.variables.name | capitalize}}!" | liquid }}'

The filter renders the Liquid source with a Studio-shaped view of the step's
template context (https://www.twilio.com/docs/studio/user-guide/liquid-template-language):

* ``flow.variables.X``: the execution's ``vars.X`` (a ``set`` step writes
  them); a variable no step has set yet is nil, as in Studio
* ``flow.data.X``: only the parameters the flow was started with (``POST
  /api/v1/executions`` parameters, Studio's REST trigger), kept by the imported
  flow's first step; ``trigger.parent.parameters.X`` too, for a subflow
* ``flow.flow_sid``: a stable ``FW…`` SID made from the flow's id
* ``widgets.W.inbound.Body``: what the contact answered at ask step ``W``
* ``widgets.W.parsed`` / ``widgets.W.body`` / ``widgets.W.status_code``: the
  answer of http step ``W`` (``body`` is the raw text of an answer that is not
  JSON, the JSON text otherwise)
* ``trigger.message.Body`` / ``.From`` / ``.MessageSid``: the message that
  started the flow (kept by the imported flow's first step) and the contact's
  address; ``trigger.conversation.Body`` / ``.Author`` / ``.Source`` the same
  for a flow triggered by ``incomingConversationMessage``
* ``contact.channel.address``: ``whatsapp:+1555…`` or ``+1555…``
* ``flow.channel.address``: empty (Parley answers from the number written to)

Undefined names are nil, as in Studio: they render as nothing and are false in
``{% if %}``. A mapping or a list renders as JSON (``{"a": 1}``), as Studio
renders objects, never as a Python repr. What a contact typed is data here,
never a template.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context
from liquid import Environment, Mode
from liquid.exceptions import LiquidError

from engine.templating import Templates

_LIQUID = Environment()
_LENIENT = Environment(tolerance=Mode.LAX)

log = logging.getLogger("parley.studio")

#: Variables of an imported flow that are Parley's book-keeping, not Studio's.
INTERNAL_PREFIX = "studio_"

#: The variable holding the parameters the flow was started with (``flow.data``).
DATA_VARIABLE = "studio_data"

#: The variable holding the trigger event that started the flow.
EVENT_VARIABLE = "studio_trigger_event"


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, _JSONList) else str(value)


class _JSONMapping(dict):
    """A mapping that renders as JSON in a Liquid output, as Studio renders objects."""

    def __str__(self) -> str:
        return _json(self)


class _JSONList(Sequence):
    """A list that renders as JSON in a Liquid output (a real list would be joined)."""

    def __init__(self, items: list[Any]) -> None:
        self._items = items

    def __getitem__(self, index: Any) -> Any:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __eq__(self, other: object) -> bool:
        return list(self._items) == (list(other) if isinstance(other, Sequence) else other)

    def __str__(self) -> str:
        return _json(self._items)


def _studio_value(value: Any) -> Any:
    """`value` with its mappings and lists made to render as JSON."""
    if isinstance(value, Mapping):
        return _JSONMapping({key: _studio_value(item) for key, item in value.items()})
    if isinstance(value, list | tuple):
        return _JSONList([_studio_value(item) for item in value])
    return value


def flow_sid(flow_id: str) -> str:
    """A stable Studio-shaped flow SID (``FW`` and 32 hex digits) for a Parley flow id."""
    return "FW" + hashlib.sha256(flow_id.encode()).hexdigest()[:32]


def _public(variables: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in variables.items() if not str(k).startswith(INTERNAL_PREFIX)}


def _address(contact: Mapping[str, Any]) -> str:
    phone = str(contact.get("phone") or "")
    return f"whatsapp:{phone}" if contact.get("channel") == "whatsapp" else phone


def studio_context(values: Mapping[str, Any]) -> dict[str, Any]:
    """The names Studio's templates see, from a Parley step's template context.

    Args:
        values: ``contact``, ``vars``, ``input``, ``steps`` and ``flow`` as
            `engine.steps.base.StepContext.template_context` gives them.
    """
    variables = dict(values.get("vars") or {})
    contact = dict(values.get("contact") or {})
    given = dict(values.get("input") or {})
    flow = dict(values.get("flow") or {})
    widgets: dict[str, Any] = {}
    for step_id, result in dict(values.get("steps") or {}).items():
        if not isinstance(result, Mapping):
            continue
        widget: dict[str, Any] = {}
        if "text" in result or "answer" in result:
            widget["inbound"] = {"Body": result.get("text", result.get("answer"))}
        if "response" in result or "status" in result:
            parsed = result.get("response")
            widget["parsed"] = parsed
            widget["status_code"] = result.get("status")
            if "body" in result:  # an answer that is not JSON: its raw text
                widget["body"] = result["body"]
            elif parsed is not None:
                widget["body"] = parsed if isinstance(parsed, str) else json.dumps(parsed)
        if "result" in result:  # a subflow's vars
            widget.update(result["result"] if isinstance(result["result"], Mapping) else {})
        widgets[step_id] = widget
    address = _address(contact)
    data = variables.get(DATA_VARIABLE)
    data = _public(data) if isinstance(data, Mapping) else {}
    body = variables.get("studio_trigger_body", given.get("text", ""))
    channel = "WHATSAPP" if contact.get("channel") == "whatsapp" else "SMS"
    trigger: dict[str, Any] = {}
    event = variables.get(EVENT_VARIABLE)
    if event == "incomingConversationMessage":
        trigger["conversation"] = {"Body": body, "Author": address, "Source": channel}
    elif event == "incomingRequest":
        trigger["request"] = {"parameters": data}
    elif event == "incomingParent":
        trigger["parent"] = {"parameters": data}
    if event in (None, "incomingMessage", "incomingConversationMessage"):
        trigger["message"] = {"Body": body, "From": address}
    context = {
        "flow": {
            "variables": _public(variables),
            "data": data,
            "flow_sid": flow_sid(str(flow.get("id") or "")),
            "channel": {"address": ""},
        },
        "widgets": widgets,
        "trigger": trigger,
        "contact": {"channel": {"address": address}},
    }
    return {name: _studio_value(value) for name, value in context.items()}


def render(source: str, values: Mapping[str, Any]) -> str:
    """Render a Studio Liquid template against a Parley template context.

    A template with a mistake renders leniently, as Studio's does: an unknown
    tag or filter is ignored, and from a syntax error on (``{{x}`` missing a
    brace) the text is sent as written. ``flows validate`` warns about each.

    Raises:
        liquid.exceptions.LiquidError: the template fails even leniently.
    """
    names = studio_context(values)
    try:
        return _LIQUID.from_string(source).render(**names)
    except LiquidError as error:
        log.warning("studio.liquid.lenient reason=%s", str(error).splitlines()[0])
    try:
        return _LENIENT.from_string(source).render(**names)
    except LiquidError as error:
        index = getattr(getattr(error, "token", None), "start_index", -1)
        if index is None or index < 0:
            return source
        head = _LENIENT.from_string(source[:index]).render(**names)
        return head + source[index:]


@pass_context
def _liquid_filter(context: Context, source: str) -> str:
    return render(str(source), context.get_all())


def check(source: str) -> list[str]:
    """What is wrong with a Studio Liquid template: syntax, unknown tags and filters.

    Validation reports them as warnings: Studio renders such a template
    leniently, and so does `render`.

    Returns:
        One line per problem (empty when the template is sound).
    """
    try:
        template = _LIQUID.from_string(source)
        analysis = template.analyze()
    except LiquidError as error:
        return [str(error).splitlines()[0]]
    return [f"no filter named {name!r}" for name in analysis.filters if name not in _LIQUID.filters]


def install(templates: Templates) -> Templates:
    """Register the ``liquid`` filter (and its check for validation); returns `templates`."""
    templates.env.filters["liquid"] = _liquid_filter
    templates.literal_checks["liquid"] = check
    return templates
