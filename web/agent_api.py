"""The agent apps' API, behind ``AGENT_API_TOKEN`` (``Authorization: Bearer <token>``).

For teams that answer from their own tools. Each call names the agent it acts
for (a console user's id) and is one control event or one message:

- ``POST /api/agent/conversations/<id>/messages`` ``{"agent_id", "body",
  "content_sid"?}``: send the agent's message (a WhatsApp template outside
  the 24-hour window);
- ``POST .../takeover`` ``{"agent_id"}``;
- ``POST .../handover`` ``{"agent_id", "to"}`` (``agent:<id>`` or
  ``queue:<name>``: a transfer);
- ``POST .../accept`` ``{"agent_id"}`` (``handover_confirmed``);
- ``POST .../handback`` ``{"agent_id", "step"?}``.

Answers: 200 ``{"ok": true, ...}``; 400 for a malformed body; 401 for a
missing or wrong token; 404 for an unknown conversation or agent; 409 when
the control event is not allowed now (``{"error": reason}``); 503 when the
token is not configured.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from pydantic import BaseModel, Field
from werkzeug.wrappers import Response

from config import reveal
from handover import control as handover
from handover import queries
from handover.routing import hand_back
from integrations.twilio import MAX_WHATSAPP_BODY_CHARS
from models import db
from web.api.problems import MEDIA_TYPE, BadRequest, parameters, parse, problem
from web.api.schemas import TEXT_PATTERN, ConversationPath, Id

log = logging.getLogger("parley.web.agent_api")

bp = Blueprint("agent_api", __name__, url_prefix="/api/agent")


def _error(status: int, reason: str) -> tuple[Response, int]:
    return problem(status, reason), status


class AgentAction(BaseModel):
    """The body of ``takeover`` and ``accept``."""

    agent_id: Id = Field(description="The console user the agent acts as.")


class AgentMessage(AgentAction):
    """The body of ``messages``."""

    body: str = Field(
        min_length=1,
        max_length=MAX_WHATSAPP_BODY_CHARS,
        pattern=TEXT_PATTERN,
        description="The message text.",
    )
    content_sid: str | None = Field(
        default=None,
        pattern=r"^HX[0-9a-f]{32}$",
        description="A WhatsApp template (Content API SID) for outside the 24-hour window.",
    )


class AgentTransfer(AgentAction):
    """The body of ``handover``."""

    to: str = Field(
        pattern=r"^(agent:[1-9][0-9]{0,17}|queue:[A-Za-z0-9_.-]{1,64})$",
        description="agent:<id> or queue:<name>.",
    )


class AgentHandback(AgentAction):
    """The body of ``handback``."""

    step: str | None = Field(
        default=None,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.-]+$",
        description="A step id of the contact's flow (default: where it left off).",
    )


_MODELS: dict[str, type[AgentAction]] = {
    "messages": AgentMessage,
    "takeover": AgentAction,
    "accept": AgentAction,
    "handover": AgentTransfer,
    "handback": AgentHandback,
}


@bp.before_request
def _check_token() -> Any:
    expected = reveal(current_app.extensions["parley"].settings.agent_api_token)
    if not expected:
        log.error("agent_api.token.unconfigured: AGENT_API_TOKEN is not set")
        return _error(503, "AGENT_API_TOKEN is not set on the server")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), str(expected).encode()
    ):
        log.warning("agent_api.token.refused path=%s", request.path)
        return problem(
            401,
            "missing or wrong token (Authorization: Bearer <token>)",
            {"WWW-Authenticate": 'Bearer realm="parley-agent-api"'},
        )
    return None


def _body(action: str, conversation_id: int) -> Any:
    """The request's JSON body checked with the action's model, and the path's id checked.

    Raises:
        BadRequest: not a JSON object, or a field is missing or malformed.
    """
    parse(ConversationPath, {"conversation_id": conversation_id})
    data = request.get_json(silent=True)
    if not isinstance(data, dict):
        raise BadRequest("send a JSON object")
    return parse(_MODELS[action], data)


class _Bad(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@bp.errorhandler(_Bad)
def _bad(error: _Bad) -> tuple[Response, int]:
    return _error(error.status, error.reason)


def _agent_id(data: AgentAction) -> int:
    if not queries.is_active_agent(db.session, data.agent_id):
        raise _Bad(404, f"no active console user {data.agent_id}")
    return data.agent_id


def _run(conversation_id: int, change: Callable[[], Any]) -> tuple[Response, int]:
    if not queries.conversation_exists(db.session, conversation_id):
        raise _Bad(404, f"no conversation {conversation_id}")
    try:
        result = change()
        db.session.commit()
    except handover.ControlError as error:
        db.session.rollback()
        return _error(409, error.reason)
    ids = result if isinstance(result, list) else []
    if ids:
        current_app.extensions["parley"].send_stored(ids, db.session)
    state = handover.control(db.session, conversation_id)
    return jsonify(ok=True, controlled_by=state.controlled_by, message_ids=ids), 200


@bp.post("/conversations/<int:conversation_id>/messages")
def send_message(conversation_id: int) -> tuple[Response, int]:
    """Send an agent's message to the contact."""
    data = _body("messages", conversation_id)
    agent_id = _agent_id(data)
    body, sid = data.body, data.content_sid
    template = {"content_sid": sid, "content_variables": {}} if sid else None
    return _run(
        conversation_id,
        lambda: [
            handover.agent_message(
                db.session, conversation_id, handover.agent(agent_id), body, template
            )
        ],
    )


@bp.post("/conversations/<int:conversation_id>/takeover")
def takeover(conversation_id: int) -> tuple[Response, int]:
    """The agent takes control at once."""
    agent_id = _agent_id(_body("takeover", conversation_id))
    return _run(conversation_id, lambda: handover.takeover(db.session, conversation_id, agent_id))


@bp.post("/conversations/<int:conversation_id>/accept")
def accept(conversation_id: int) -> tuple[Response, int]:
    """The agent accepts a pending handover."""
    agent_id = _agent_id(_body("accept", conversation_id))
    return _run(conversation_id, lambda: handover.confirm(db.session, conversation_id, agent_id))


@bp.post("/conversations/<int:conversation_id>/handover")
def transfer(conversation_id: int) -> tuple[Response, int]:
    """The agent in control passes the conversation on (``to``: ``agent:<id>``/``queue:<name>``)."""
    data = _body("handover", conversation_id)
    agent_id = _agent_id(data)
    target = data.to
    return _run(
        conversation_id,
        lambda: handover.handover(db.session, conversation_id, handover.agent(agent_id), target),
    )


@bp.post("/conversations/<int:conversation_id>/handback")
def handback(conversation_id: int) -> tuple[Response, int]:
    """Return control to the bot, where the flow left off or at ``step``."""
    data = _body("handback", conversation_id)
    agent_id = _agent_id(data)
    step = data.step
    turns = current_app.extensions["parley"].turns()
    return _run(
        conversation_id,
        lambda: hand_back(turns, conversation_id, handover.agent(agent_id), step),
    )


_ACTIONS = {
    "messages": ("agentSendMessage", "Send the agent's message to the contact."),
    "takeover": ("agentTakeover", "The agent takes control at once."),
    "accept": ("agentAccept", "The agent accepts a pending handover."),
    "handover": ("agentTransfer", "Pass the conversation to agent:<id> or queue:<name>."),
    "handback": ("agentHandback", "Give control back to the bot (at `step`, if given)."),
}


def openapi_paths() -> dict[str, Any]:
    """This API's part of the OpenAPI document (web/api/openapi.py), from the body models."""
    error = {"$ref": "#/components/schemas/Problem"}
    reasons = {
        "400": "Malformed body or conversation id.",
        "401": "Missing or wrong token.",
        "404": "No such conversation or agent.",
        "409": "Not allowed now (who has the conversation, the WhatsApp window...).",
        "503": "AGENT_API_TOKEN is not set.",
    }
    paths: dict[str, Any] = {}
    for action, (operation, summary) in _ACTIONS.items():
        body = _MODELS[action].model_json_schema(mode="validation")
        body.pop("title", None)
        paths[f"/api/agent/conversations/{{conversation_id}}/{action}"] = {
            "post": {
                "operationId": operation,
                "summary": summary,
                "tags": ["agent"],
                "security": [{"bearerToken": []}],
                "parameters": parameters(ConversationPath, "path"),
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                },
                "responses": {
                    "200": {
                        "description": "Done: who has the conversation now.",
                        "content": {"application/json": {"schema": {"type": "object"}}},
                    },
                    **{
                        status: {"description": reason, "content": {MEDIA_TYPE: {"schema": error}}}
                        for status, reason in reasons.items()
                    },
                },
            }
        }
    return paths
