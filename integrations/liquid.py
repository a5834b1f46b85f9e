"""Twilio Studio's Liquid templates, evaluated with python-liquid inside Parley's flows.

A flow imported from Studio (studio/importer.py) keeps each Studio
template as written and renders it at run time through the ``liquid`` filter::

    say: '{{ "Hi {{flow.variables.name | capitalize}}!" | liquid }}'

The filter renders the Liquid source with a Studio-shaped view of the step's
template context (https://www.twilio.com/docs/studio/user-guide/liquid-template-language):

* ``flow.variables.X`` and ``flow.data.X``: the execution's ``vars.X`` (a
  ``set`` step writes them; ``POST /api/v1/executions`` parameters are ``vars``)
* ``widgets.W.inbound.Body``: what the contact answered at ask step ``W``
* ``widgets.W.parsed`` / ``widgets.W.body`` / ``widgets.W.status_code``: the
  answer of http step ``W``
* ``trigger.message.Body`` / ``.From``: the message that started the flow
  (kept by the imported flow's first step) and the contact's address
* ``contact.channel.address``: ``whatsapp:+1555…`` or ``+1555…``
* ``flow.channel.address``: empty (Parley answers from the number written to)

Undefined names render as nothing, as in Studio. What a contact typed is data
here, never a template.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from jinja2 import pass_context
from jinja2.runtime import Context
from liquid import Environment

from engine.templating import Templates

_LIQUID = Environment()


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
            widget["body"] = parsed if isinstance(parsed, str) else json.dumps(parsed)
        if "result" in result:  # a subflow's vars
            widget.update(result["result"] if isinstance(result["result"], Mapping) else {})
        widgets[step_id] = widget
    address = _address(contact)
    return {
        "flow": {"variables": variables, "data": variables, "channel": {"address": ""}},
        "widgets": widgets,
        "trigger": {
            "message": {
                "Body": variables.get("studio_trigger_body", given.get("text", "")),
                "From": address,
            }
        },
        "contact": {"channel": {"address": address}},
    }


def render(source: str, values: Mapping[str, Any]) -> str:
    """Render a Studio Liquid template against a Parley template context.

    Raises:
        liquid.exceptions.LiquidError: the template does not parse or render
            (the step then fails with the flow's fallback).
    """
    return _LIQUID.from_string(source).render(**studio_context(values))


@pass_context
def _liquid_filter(context: Context, source: str) -> str:
    return render(str(source), context.get_all())


def install(templates: Templates) -> Templates:
    """Register the ``liquid`` filter on a template environment; returns it."""
    templates.env.filters["liquid"] = _liquid_filter
    return templates
