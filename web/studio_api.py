"""``POST /api/v1/executions``: start a flow for a contact, like Studio's Executions API.

Request (form-encoded as Studio's API takes it, or JSON)::

    To=whatsapp:+15551234567         the contact (whatsapp:+E164 or +E164)
    Flow=goal_setting                a loaded flow's id
    From=whatsapp:+15557654321       our number to send from (optional when the
                                     contact wrote before: their latest conversation's)
    Parameters={"name": "Ana"}       optional: a JSON object (a string in a form,
                                     an object in JSON): the flow's starting vars
    Idempotency-Key: <client key>    header (or I-Twilio-Idempotency-Token, or an
                                     IdempotencyKey field)

Answers 201 with ``{id, execution_id, flow, status, message_ids, replayed}``
once the first messages are stored and handed to the Twilio REST API; 200 with
the first answer (``replayed: true``) for a key seen before; 401 without
``STUDIO_TOKEN`` (as ``/studio/*``); 400 for a bad field; 404 for an unknown
flow; 409 when the contact is already in a flow (Studio does the same).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy.exc import OperationalError

from integrations.twilio import FIELD_LIMITS, parse_address
from models import db
from studio.executions import ExecutionConflict, start_execution
from web.api.problems import MEDIA_TYPE
from web.api.schemas import PHONE_PATTERN, TEXT_PATTERN
from web.studio import _error, verify_studio_request

log = logging.getLogger("parley.web.studio")

bp = Blueprint("studio_api", __name__, url_prefix="/api/v1")

#: The longest idempotency key kept (the column's size).
MAX_KEY_LENGTH = 255


def _fields() -> dict[str, Any]:
    if request.is_json:
        data = request.get_json(silent=True)
        return data if isinstance(data, dict) else {}
    return request.form.to_dict()


def _parameters(raw: Any) -> dict[str, Any]:
    """``Parameters`` as a dict.

    Raises:
        ValueError: not a JSON object.
    """
    if raw in (None, ""):
        return {}
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as error:
            raise ValueError(f"Parameters is not JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError("Parameters must be a JSON object")
    return raw


@bp.post("/executions")
def create_execution() -> Response:
    """Start a flow for ``To`` and send its first messages."""
    refused = verify_studio_request()
    if refused is not None:
        return refused
    fields = _fields()
    to, flow_id = fields.get("To"), fields.get("Flow")
    if not isinstance(to, str) or not to.strip():
        return _error(400, "To is required: whatsapp:+E164 or +E164")
    if not isinstance(flow_id, str) or not flow_id:
        return _error(400, "Flow is required: a flow id")
    try:
        channel, phone = parse_address(to.strip())
        parameters = _parameters(fields.get("Parameters"))
    except ValueError as error:
        return _error(400, str(error))
    key = (
        request.headers.get("Idempotency-Key")
        or request.headers.get("I-Twilio-Idempotency-Token")
        or fields.get("IdempotencyKey")
        or None
    )
    if key is not None and (not isinstance(key, str) or len(key) > MAX_KEY_LENGTH):
        return _error(400, f"the idempotency key must be text of at most {MAX_KEY_LENGTH} chars")
    parley = current_app.extensions["parley"]
    if parley.flows.get(flow_id) is None:
        return _error(404, f"no flow {flow_id!r}")
    sender_address = str(fields.get("From") or "").strip() or None
    if sender_address is not None and (
        len(sender_address) > FIELD_LIMITS["To"] or not sender_address.isprintable()
    ):
        return _error(400, f"From: at most {FIELD_LIMITS['To']} printable characters")
    try:
        started = start_execution(
            parley.turns(),
            phone=phone,
            channel=channel,
            address=sender_address,
            flow_id=flow_id,
            parameters=parameters,
            key=key,
        )
    except ExecutionConflict as conflict:
        return _error(409, str(conflict))
    except ValueError as error:
        return _error(400, str(error))
    except OperationalError:
        log.exception("studio.execution.database_unavailable")
        return _error(503, "the database cannot be reached")
    if not started.replayed and started.message_ids:
        parley.send_stored(started.message_ids, db.session)
    response = jsonify(started.as_dict())
    response.status_code = 200 if started.replayed else 201
    return response


def openapi_paths() -> dict[str, Any]:
    """This endpoint's part of the OpenAPI document (web/api/openapi.py)."""
    error = {
        "description": "",
        "content": {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
    }
    reasons = {
        "400": "A bad field; `error` says which.",
        "401": "Missing or wrong STUDIO_TOKEN.",
        "404": "No such flow.",
        "409": "The contact is already in a flow.",
        "503": "STUDIO_TOKEN is not set, or the database cannot be reached.",
    }
    started = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "execution_id": {"type": ["integer", "null"]},
            "flow": {"type": "string"},
            "status": {"type": "string"},
            "message_ids": {"type": "array", "items": {"type": "integer"}},
            "replayed": {"type": "boolean"},
        },
        "required": ["id", "execution_id", "flow", "status", "message_ids", "replayed"],
    }
    fields = {
        "type": "object",
        "properties": {
            "To": {
                "type": "string",
                "pattern": PHONE_PATTERN,
                "description": "The contact: whatsapp:+E164 or +E164.",
            },
            "Flow": {"type": "string", "minLength": 1, "description": "A loaded flow's id."},
            "From": {
                "type": "string",
                "maxLength": FIELD_LIMITS["To"],
                "pattern": TEXT_PATTERN,
                "description": "Our number to send from.",
            },
            "Parameters": {
                "description": "The flow's starting vars: a JSON object (a string in a form)."
            },
            "IdempotencyKey": {"type": "string", "maxLength": MAX_KEY_LENGTH},
        },
        "required": ["To", "Flow"],
    }
    return {
        "/api/v1/executions": {
            "post": {
                "operationId": "createExecution",
                "summary": "Start a flow for a contact and send its first messages "
                "(like Twilio Studio's Executions API).",
                "tags": ["studio"],
                "security": [{"bearerToken": []}],
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "maxLength": MAX_KEY_LENGTH},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/x-www-form-urlencoded": {"schema": fields},
                        "application/json": {"schema": fields},
                    },
                },
                "responses": {
                    "201": {
                        "description": "Started; the first messages were sent.",
                        "content": {"application/json": {"schema": started}},
                    },
                    "200": {
                        "description": "The idempotency key was seen before: its first answer.",
                        "content": {"application/json": {"schema": started}},
                    },
                    **{status: {**error, "description": text} for status, text in reasons.items()},
                },
            }
        }
    }
