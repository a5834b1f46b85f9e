"""``POST /studio/flows/<flow>/steps/<step>``: one Parley step for a Studio HTTP widget.

Studio's *Make HTTP Request* widget sends (form-encoded, or JSON with
``Content-Type: application/json``)::

    From=whatsapp:+15551234567      {{contact.channel.address}} or {{trigger.message.From}}
    Body=I slept badly              {{trigger.message.Body}} or {{widgets.ask.inbound.Body}}
    vars.area=sleep                 optional: set in the execution's ``vars`` first
    To=whatsapp:+15557654321        optional: our number ({{flow.channel.address}})

and reads the JSON answer as ``{{widgets.<name>.parsed.reply}}``,
``parsed.next``, ``parsed.done`` … (see `studio.steps.StepAnswer`). The
token is the one of ``POST /studio/entitlement`` (``STUDIO_TOKEN``: a Bearer
header, ``X-Parley-Token`` or ``?token=``). Answers 401 without it, 404 for an
unknown flow or step, 400 for a missing or malformed ``From``, 503 when the
database cannot be reached or ``STUDIO_LLM_TIMEOUT`` is malformed.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Response, current_app, request
from sqlalchemy.exc import OperationalError

from integrations.twilio import parse_address
from studio.steps import run_studio_step, runner_for_studio, studio_llm
from web.studio import _error, bp, verify_studio_request

log = logging.getLogger("parley.web.studio")


def studio_fields() -> tuple[dict[str, str], dict[str, Any]]:
    """The request's fields (values as strings) and the ``vars`` it sets.

    ``vars`` come from fields named ``vars.NAME`` (form or JSON) or, in a JSON
    body, a ``vars`` object; they are data, never rendered as templates.
    """
    if request.is_json:
        data = request.get_json(silent=True)
        data = data if isinstance(data, dict) else {}
    else:
        data = request.form.to_dict()
    given = data.get("vars")
    variables: dict[str, Any] = dict(given) if isinstance(given, dict) else {}
    fields: dict[str, str] = {}
    for key, value in data.items():
        if key.startswith("vars.") and len(key) > 5:
            variables[key[5:]] = value
        elif value is not None and key != "vars":
            fields[key] = str(value)
    return fields, variables


def _runner():
    """The app's runner with Studio's short LLM deadline (built once per app)."""
    cached = current_app.extensions.get("parley_studio_runner")
    parley = current_app.extensions["parley"]
    runner = parley.runner
    if cached is None or cached[0] is not runner:
        cached = (runner, runner_for_studio(runner, studio_llm(parley.settings)))
        current_app.extensions["parley_studio_runner"] = cached
    return cached[1]


@bp.post("/flows/<flow_id>/steps/<step_id>")
def run_step(flow_id: str, step_id: str) -> Response:
    """Run one step for ``From`` with ``Body``; JSON Studio can parse."""
    refused = verify_studio_request()
    if refused is not None:
        return refused
    fields, variables = studio_fields()
    raw = fields.get("From", "").strip()
    if not raw:
        return _error(400, "From is required: whatsapp:+E164 or +E164")
    try:
        channel, phone = parse_address(raw)
    except ValueError as error:
        return _error(400, f"From: {error}")
    parley = current_app.extensions["parley"]
    if parley.flows.get(flow_id) is None:
        return _error(404, f"no flow {flow_id!r}")
    if step_id not in parley.flows.get(flow_id).steps:
        return _error(404, f"no step {step_id!r} in flow {flow_id!r}")
    try:
        answer = run_studio_step(
            parley.turns(),
            _runner(),
            flow_id=flow_id,
            step_id=step_id,
            phone=phone,
            channel=channel,
            body=fields.get("Body", ""),
            address=fields.get("To", "").strip() or "studio",
            variables=variables,
        )
    except OperationalError:
        log.exception("studio.step.database_unavailable")
        return _error(503, "the database cannot be reached")
    return Response(answer.as_json(), mimetype="application/json")
