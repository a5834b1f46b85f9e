"""The public API: published conversations, redacted, for the website that shows them.

Only conversations a curator published are ever returned, and only their
redacted texts (`RedactedMessage`), never `Message.body`. As a last guard,
every text goes through the phone and e-mail detectors again on its way out,
so a number a curator typed back into a summary is still not served. No field
carries a phone number: people appear as ``display_name``.

    GET /api/v1/conversations?page=1&per_page=20
    GET /api/v1/conversations/<id>
    GET /api/v1/conversations/search?query=sleep&page=1
    GET /api/v1/messages?conversation_id=<id>
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from curation import redaction, transcripts
from models import db
from models.curation import Curation, RedactedMessage
from models.entities import Conversation, Message
from web.api import schemas
from web.api.problems import BadRequest, parse, problem

bp = Blueprint("public_api", __name__, url_prefix="/api/v1")


def _error(status: int, reason: str) -> ResponseReturnValue:
    return problem(status, reason)


def _scrub(text: str) -> str:
    context = redaction.Context(
        regions=redaction.parse_regions(current_app.config.get("REDACTION_REGION"))
    )
    spans = sorted(
        redaction.phones(text, context) + redaction.emails(text, context),
        key=lambda span: span.start,
    )
    kept: list[redaction.Span] = []
    for span in spans:
        if not kept or span.start >= kept[-1].end:
            kept.append(span)
    return redaction.apply(text, kept)


def _agent() -> schemas.Person:
    return schemas.Person(
        display_name=current_app.config.get("PUBLIC_AGENT_NAME") or "Parley coach", kind="agent"
    )


def _published() -> sa.Select:
    return (
        sa.select(Conversation, Curation)
        .join(Curation, Curation.conversation_id == Conversation.id)
        .where(Curation.published.is_(True))
    )


def _summaries(rows: list[Any]) -> list[schemas.PublicConversation]:
    ids = [conversation.id for conversation, _ in rows]
    counts = dict(
        db.session.execute(
            sa.select(RedactedMessage.conversation_id, sa.func.count())
            .where(RedactedMessage.conversation_id.in_(ids))
            .group_by(RedactedMessage.conversation_id)
        ).all()
    )
    tags = transcripts.tags_of(db.session, ids)
    return [
        schemas.PublicConversation(
            id=conversation.id,
            question=_scrub(curation.summary_question),
            answer=_scrub(curation.summary_answer),
            teaser=_scrub(curation.teaser),
            tags=tags.get(conversation.id, []),
            rating=curation.rating,
            channel=conversation.channel,  # type: ignore[arg-type]
            message_count=counts.get(conversation.id, 0),
            published_at=curation.published_at,
            started_at=conversation.created_at,
            agent=_agent(),
            user=schemas.Person(display_name=f"Texter {conversation.id}", kind="user"),
        )
        for conversation, curation in rows
    ]


def _page(query: sa.Select, paging: schemas.Paging) -> ResponseReturnValue:
    page, per_page = paging.page, paging.per_page
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    rows = db.session.execute(
        query.order_by(Curation.published_at.desc(), Conversation.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    body = schemas.ConversationList(
        data=_summaries(rows),
        pagination=schemas.Pagination(
            page=page, per_page=per_page, total=total, total_pages=-(-total // per_page)
        ),
    )
    db.session.rollback()
    return jsonify(body.model_dump(mode="json"))


def _messages(conversation_id: int) -> list[schemas.PublicMessage]:
    agent = _agent().display_name
    rows = db.session.execute(
        sa.select(Message.id, Message.author, Message.created_at, RedactedMessage.text)
        .join(RedactedMessage, RedactedMessage.message_id == Message.id)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.created_at, Message.id)
    ).all()
    return [
        schemas.PublicMessage(
            id=message_id,
            conversation_id=conversation_id,
            author="user" if author == "contact" else "agent",
            display_name=f"Texter {conversation_id}" if author == "contact" else agent,
            text=_scrub(text),
            sent_at=created_at,
        )
        for message_id, author, created_at, text in rows
    ]


@bp.get("/conversations")
def list_conversations() -> ResponseReturnValue:
    """Published conversations, most recently published first."""
    return _page(_published(), parse(schemas.Paging, request.args))


@bp.get("/conversations/search")
def search_conversations() -> ResponseReturnValue:
    """Published conversations whose summary or redacted messages contain ``query``."""
    if not request.args.get("query"):
        raise BadRequest("query is required, e.g. ?query=sleep")
    search = parse(schemas.SearchQuery, request.args)
    query = search.query.strip()
    matches = sa.or_(
        transcripts.text_match(db.session, Curation.summary_question, query),
        transcripts.text_match(db.session, Curation.summary_answer, query),
        transcripts.text_match(db.session, Curation.teaser, query),
        sa.exists().where(
            RedactedMessage.conversation_id == Conversation.id,
            transcripts.text_match(db.session, RedactedMessage.text, query),
        ),
    )
    return _page(_published().where(matches), search)


@bp.get("/conversations/<int:conversation_id>")
def get_conversation(conversation_id: int) -> ResponseReturnValue:
    """One published conversation with its redacted messages (404 when not published)."""
    parse(schemas.ConversationPath, {"conversation_id": conversation_id})
    row = db.session.execute(_published().where(Conversation.id == conversation_id)).first()
    if row is None:
        return _error(404, f"no published conversation {conversation_id}")
    summary = _summaries([row])[0]
    detail = schemas.PublicConversationDetail(
        **summary.model_dump(), messages=_messages(conversation_id)
    )
    db.session.rollback()
    return jsonify(schemas.ConversationResponse(data=detail).model_dump(mode="json"))


@bp.get("/messages")
def list_messages() -> ResponseReturnValue:
    """The redacted messages of a published conversation (``conversation_id`` required)."""
    conversation_id = parse(schemas.MessagesQuery, request.args).conversation_id
    published = db.session.scalar(
        sa.select(Curation.published).where(Curation.conversation_id == conversation_id)
    )
    if not published:
        db.session.rollback()
        return _error(404, f"no published conversation {conversation_id}")
    body = schemas.MessageList(data=_messages(conversation_id))
    db.session.rollback()
    return jsonify(body.model_dump(mode="json"))
