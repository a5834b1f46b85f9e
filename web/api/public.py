"""The public API: published conversations, redacted, for the website that shows them.

Only conversations a curator published are ever returned, and only their
redacted texts, scrubbed once more on the way out (`curation.queries`, where
the reads are). No field carries a phone number: people appear as
``display_name``.

    GET /api/v1/conversations?page=1&per_page=20
    GET /api/v1/conversations/<id>
    GET /api/v1/conversations/search?query=sleep&page=1
    GET /api/v1/messages?conversation_id=<id>
"""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from curation import queries
from models import db
from web.api import schemas
from web.api.problems import BadRequest, parse, problem

bp = Blueprint("public_api", __name__, url_prefix="/api/v1")


def _regions() -> str:
    return current_app.extensions["parley"].settings.redaction_region


def _agent() -> schemas.Person:
    return schemas.Person(
        display_name=current_app.extensions["parley"].settings.public_agent_name, kind="agent"
    )


def _conversation(summary: queries.PublishedSummary) -> schemas.PublicConversation:
    return schemas.PublicConversation(
        id=summary.id,
        question=summary.question,
        answer=summary.answer,
        teaser=summary.teaser,
        tags=summary.tags,
        rating=summary.rating,
        channel=summary.channel,  # type: ignore[arg-type]
        message_count=summary.message_count,
        published_at=summary.published_at,
        started_at=summary.started_at,
        agent=_agent(),
        user=schemas.Person(display_name=f"Texter {summary.id}", kind="user"),
    )


def _messages(
    conversation_id: int, messages: list[queries.PublishedMessage]
) -> list[schemas.PublicMessage]:
    agent = _agent().display_name
    return [
        schemas.PublicMessage(
            id=message.id,
            conversation_id=conversation_id,
            author="user" if message.from_contact else "agent",
            display_name=f"Texter {conversation_id}" if message.from_contact else agent,
            text=message.text,
            sent_at=message.sent_at,
        )
        for message in messages
    ]


def _page(paging: schemas.Paging, search: str | None = None) -> ResponseReturnValue:
    page, per_page = paging.page, paging.per_page
    found = queries.published_page(db.session, page, per_page, _regions(), search)
    db.session.rollback()
    body = schemas.ConversationList(
        data=[_conversation(summary) for summary in found.items],
        pagination=schemas.Pagination(
            page=page,
            per_page=per_page,
            total=found.total,
            total_pages=-(-found.total // per_page),
        ),
    )
    return jsonify(body.model_dump(mode="json"))


@bp.get("/conversations")
def list_conversations() -> ResponseReturnValue:
    """Published conversations, most recently published first."""
    return _page(parse(schemas.Paging, request.args))


@bp.get("/conversations/search")
def search_conversations() -> ResponseReturnValue:
    """Published conversations whose summary or redacted messages contain ``query``."""
    if not request.args.get("query"):
        raise BadRequest("query is required, e.g. ?query=sleep")
    search = parse(schemas.SearchQuery, request.args)
    return _page(search, search.query.strip())


@bp.get("/conversations/<int:conversation_id>")
def get_conversation(conversation_id: int) -> ResponseReturnValue:
    """One published conversation with its redacted messages (404 when not published)."""
    parse(schemas.ConversationPath, {"conversation_id": conversation_id})
    summary = queries.published_conversation(db.session, conversation_id, _regions())
    messages = queries.published_messages(db.session, conversation_id, _regions())
    db.session.rollback()
    if summary is None or messages is None:
        return problem(404, f"no published conversation {conversation_id}")
    detail = schemas.PublicConversationDetail(
        **_conversation(summary).model_dump(), messages=_messages(conversation_id, messages)
    )
    return jsonify(schemas.ConversationResponse(data=detail).model_dump(mode="json"))


@bp.get("/messages")
def list_messages() -> ResponseReturnValue:
    """The redacted messages of a published conversation (``conversation_id`` required)."""
    conversation_id = parse(schemas.MessagesQuery, request.args).conversation_id
    messages = queries.published_messages(db.session, conversation_id, _regions())
    db.session.rollback()
    if messages is None:
        return problem(404, f"no published conversation {conversation_id}")
    body = schemas.MessageList(data=_messages(conversation_id, messages))
    return jsonify(body.model_dump(mode="json"))
