"""The internal API, behind ``INTERNAL_API_TOKEN`` (``Authorization: Bearer <token>``).

``POST /api/v1/contacts.recent-messages`` answers a contact's recent messages
grouped by conversation, in the shape of Airy's ``contacts``/``messages``
endpoints: each conversation carries its own ``pagination_data.next_cursor``,
passed back in ``cursors`` for its older messages. Unlike the public API these
are the original texts: the token must stay on servers.

401 without the right token, 503 while the token is not configured, 400 for a
malformed body, 404 for an unknown contact.
"""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from config import reveal
from curation import queries
from models import db
from web.api import schemas
from web.api.problems import parse, problem

log = logging.getLogger("parley.web.api")

bp = Blueprint("internal_api", __name__, url_prefix="/api/v1")


def _error(status: int, reason: str) -> ResponseReturnValue:
    return problem(status, reason)


def _refused() -> ResponseReturnValue | None:
    expected = reveal(current_app.extensions["parley"].settings.internal_api_token)
    if not expected:
        log.error("api.token.unconfigured: INTERNAL_API_TOKEN is not set")
        return _error(503, "INTERNAL_API_TOKEN is not set on the server")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.encode(), str(expected).encode()
    ):
        log.warning("api.token.refused path=%s", request.path)
        return problem(
            401,
            "missing or wrong token (Authorization: Bearer <token>)",
            {"WWW-Authenticate": 'Bearer realm="parley-api"'},
        )
    return None


def _sender(author: str) -> schemas.Sender:
    kind, _, agent_id = author.partition(":")
    if kind not in ("contact", "bot", "agent", "system"):
        kind = "system"
    return schemas.Sender(type=kind, id=agent_id or None)  # type: ignore[arg-type]


@bp.post("/contacts.recent-messages")
def recent_messages() -> ResponseReturnValue:
    """A contact's recent messages, grouped by conversation, newest first."""
    refused = _refused()
    if refused is not None:
        return refused
    payload = parse(schemas.RecentMessagesRequest, request.get_json(silent=True))
    contact_id = queries.contact_id(db.session, payload.contact_id, payload.phone)
    if contact_id is None:
        db.session.rollback()
        return _error(404, "no such contact")
    pages = queries.recent_messages(
        db.session, contact_id, payload.source, payload.cursors, payload.page_size
    )
    groups = [
        schemas.ConversationMessages(
            conversation_id=page.conversation.id,
            source=page.conversation.channel,  # type: ignore[arg-type]
            messages=[
                schemas.InternalMessage(
                    id=row.id,
                    content=row.body,
                    from_contact=row.direction == "inbound",
                    sender=_sender(row.author),
                    delivery_state=row.status,
                    sent_at=row.created_at,
                    flow_id=row.flow_id,
                    step_id=row.step_id,
                )
                for row in page.messages
            ],
            pagination_data=schemas.PaginationData(
                next_cursor=page.next_cursor, page_size=payload.page_size
            ),
        )
        for page in pages
    ]
    db.session.rollback()
    body = schemas.RecentMessagesResponse(contact_id=contact_id, data=groups)
    return jsonify(body.model_dump(mode="json"))
