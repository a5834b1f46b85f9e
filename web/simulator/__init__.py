"""The flow simulator at ``/simulator``: chat with any flow in the browser, no Twilio needed.

A message typed on the page goes through the same `conversation.turn.TurnService` path
as the Twilio webhook (stored, serialised, run, committed, responders
included) as a chosen phone number on WhatsApp or SMS, except that the
replies are stored with the status ``simulated`` (nothing is sent to Twilio);
the page shows the replies as that channel would (each split part its own bubble), and beside
the chat the step the execution is at, its variables, the steps each turn ran
and every LLM call of the turn (messages sent, answer, tokens). With no LLM
configured, ``llm`` steps answer with the built-in scripted model in development
(`integrations.scripted`, labelled on the page) and with the flow's fallback in
production.

Only logged-in admins of the console may use it (``admin`` role): it writes
conversations as any phone number. Its POSTs carry the console's CSRF token
(``X-CSRFToken`` header).
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from flask import Blueprint, abort, current_app, render_template, request
from werkzeug.wrappers import Response

from conversation import queries
from conversation.turn import Incoming
from engine.ports import LLM, ExecutionState, LLMError, LLMRequest, LLMResponse
from integrations.scripted import describe_llm
from integrations.twilio import (
    FIELD_LIMITS,
    MAX_BODY_CHARS,
    MAX_WHATSAPP_BODY_CHARS,
    parse_address,
)
from models import Execution, db
from web.admin import csrf, requires

bp = Blueprint(
    "simulator",
    __name__,
    url_prefix="/simulator",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

#: Our side of simulated conversations (Twilio's ``To``), as ``flask chat`` uses.
SIMULATOR_NUMBER = "+15550009999"
#: The delivery status of replies in the simulator and ``flask chat``: never sent.
SIMULATED = "simulated"


@dataclasses.dataclass
class RecordingLLM:
    """An `engine.ports.LLM` that passes calls on and keeps what was asked and answered.

    Attributes:
        inner: The app's LLM.
        calls: One dict per call: ``{model, messages, schema, text, data,
            usage, error}`` (JSON-able).
    """

    inner: LLM
    calls: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def complete(self, request: LLMRequest) -> LLMResponse:
        """Call the inner LLM and record the call.

        Raises:
            LLMError: as the inner LLM does (recorded first).
        """
        call: dict[str, Any] = {
            "model": request.model,
            "messages": request.messages,
            "schema": request.schema_name if request.output_schema else None,
            "text": None,
            "data": None,
            "usage": None,
            "error": None,
        }
        self.calls.append(call)
        try:
            response = self.inner.complete(request)
        except LLMError as error:
            call["error"] = f"{type(error).__name__}: {error}"
            raise
        call.update(
            text=response.text,
            data=response.data,
            usage=dataclasses.asdict(response.usage),
        )
        return response


def _bad(reason: str) -> Response:
    response = current_app.response_class(
        response=current_app.json.dumps({"error": reason}), status=400, mimetype="application/json"
    )
    return response


def _state(execution: ExecutionState | Execution | None) -> dict[str, Any] | None:
    if execution is None:
        return None
    return {
        "flow": execution.flow_id,
        "step": execution.current_step,
        "status": execution.status,
        "variables": execution.variables or {},
        "steps": execution.step_results or {},
    }


def _phone_from(data: dict[str, Any]) -> str:
    """The E.164 phone of a request, or abort with 400."""
    try:
        _, phone = parse_address(str(data.get("phone") or "").replace(" ", ""))
    except ValueError as error:
        abort(_bad(f"phone: {error}"))
    return phone


@bp.get("")
@requires("admin")
def page() -> str:
    """The simulator page."""
    parley = current_app.extensions["parley"]
    return render_template(
        "simulator/index.html",
        flows=list(parley.flows.flows.values()),
        default_flow=parley.flows.default.id if parley.flows.default else "",
        model=describe_llm(parley.runner.llm),
    )


@bp.post("/send")
@requires("admin")
def send() -> Any:
    """Run one turn: ``{flow, phone, channel, name, text}`` → replies, state and LLM calls."""
    csrf.protect()
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return _bad("send a JSON object: {flow, phone, channel, name, text}")
    parley = current_app.extensions["parley"]
    flow_id = str(data.get("flow") or "")
    if parley.flows.get(flow_id) is None:
        return _bad(f"no flow {flow_id!r}; flows: {', '.join(parley.flows.flows)}")
    channel = data.get("channel")
    if channel not in ("whatsapp", "sms"):
        return _bad("channel: whatsapp or sms")
    text = data.get("text")
    if not isinstance(text, str):
        return _bad("text: the message the contact sends")
    limit = MAX_WHATSAPP_BODY_CHARS if channel == "whatsapp" else MAX_BODY_CHARS
    if len(text) > limit or "\x00" in text:
        return _bad(f"text: at most {limit} characters on {channel}, and no NUL character")
    phone = _phone_from(data)
    name = str(data.get("name") or "").strip() or None
    if name is not None and (len(name) > FIELD_LIMITS["ProfileName"] or "\x00" in name):
        return _bad(f"name: at most {FIELD_LIMITS['ProfileName']} characters, no NUL character")

    turns = parley.turns()
    recorder = RecordingLLM(turns.runner.llm)
    turns.runner = dataclasses.replace(turns.runner, llm=recorder)
    # Stored as simulated: no Twilio send follows, so "queued" would never move on.
    turns.settings = dataclasses.replace(turns.settings, outbound_status=SIMULATED)
    address = f"whatsapp:{SIMULATOR_NUMBER}" if channel == "whatsapp" else SIMULATOR_NUMBER
    outcome = turns.handle(
        Incoming(
            phone=phone,
            channel=channel,
            address=address,
            body=text,
            message_sid=f"sim-{uuid.uuid4().hex}",
            name=name,
        ),
        flow_id=flow_id,
    )
    result = outcome.result
    return {
        "replies": outcome.replies,
        "error": outcome.error,
        "steps_run": result.steps if result else [],
        "llm_calls": recorder.calls,
        "state": _state(result.execution if result else None)
        or _state(queries.open_execution(db.session, phone)),
    }


@bp.post("/state")
@requires("admin")
def state() -> Any:
    """The phone's open execution: ``{phone}`` → ``{state}`` (null when none)."""
    csrf.protect()
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return _bad("send a JSON object: {phone}")
    return {"state": _state(queries.open_execution(db.session, _phone_from(data)))}


@bp.post("/reset")
@requires("admin")
def reset() -> Any:
    """End the phone's open executions, so that its next message starts a flow afresh."""
    csrf.protect()
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        return _bad("send a JSON object: {phone}")
    ended = queries.end_open_executions(db.session, _phone_from(data))
    db.session.commit()
    return {"ended": ended, "state": None}
