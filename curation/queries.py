"""The API's reads: published conversations (public) and a contact's messages (internal).

The views of ``web/api/`` parse a request, call one of these and answer; the
SQL lives here.

Published reads return only conversations a curator published, and only their
redacted texts (`RedactedMessage`), never `Message.body`. As a last guard every
text goes through the phone and e-mail detectors again on its way out (with the
``REDACTION_REGION`` regions and the contact's own country), so a number a
curator typed back into a summary is still not served. The internal reads
return the original texts: their API is behind a token.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from curation import redaction, transcripts
from integrations.twilio import parse_address
from models.curation import Curation, RedactedMessage
from models.entities import Contact, Conversation, Message


@dataclass(frozen=True)
class PublishedSummary:
    """A published conversation's summary, scrubbed.

    Attributes:
        id: The conversation's id.
        question: The summary question.
        answer: The summary answer.
        teaser: The teaser.
        tags: Its tags, sorted.
        rating: 1 to 5, or None.
        channel: ``whatsapp`` or ``sms``.
        message_count: Its redacted messages.
        published_at: When it was published.
        started_at: When the conversation started.
    """

    id: int
    question: str
    answer: str
    teaser: str
    tags: list[str]
    rating: int | None
    channel: str
    message_count: int
    published_at: dt.datetime | None
    started_at: dt.datetime


@dataclass(frozen=True)
class PublishedPage:
    """One page of published conversations.

    Attributes:
        items: The conversations on the page, most recently published first.
        total: Published conversations matching, on all pages.
    """

    items: list[PublishedSummary]
    total: int


@dataclass(frozen=True)
class PublishedMessage:
    """A message of a published conversation: its redacted text, scrubbed.

    Attributes:
        id: The message's id.
        from_contact: Whether the contact wrote it (else the bot or an agent).
        sent_at: When it was stored.
        text: The redacted text.
    """

    id: int
    from_contact: bool
    sent_at: dt.datetime
    text: str


def scrub(text: str, context: redaction.Context) -> str:
    """`text` with any phone number or e-mail address left in it replaced (the last guard)."""
    spans = sorted(
        redaction.phones(text, context) + redaction.emails(text, context),
        key=lambda span: span.start,
    )
    kept: list[redaction.Span] = []
    for span in spans:
        if not kept or span.start >= kept[-1].end:
            kept.append(span)
    return redaction.apply(text, kept)


def _published() -> sa.Select:
    return (
        sa.select(Conversation, Curation, Contact.phone)
        .join(Curation, Curation.conversation_id == Conversation.id)
        .outerjoin(Contact, Contact.id == Conversation.contact_id)
        .where(Curation.published.is_(True))
    )


def _summaries(session: Session, rows: list[sa.Row], regions: str | None) -> list[PublishedSummary]:
    ids = [conversation.id for conversation, _, _ in rows]
    counts = dict(
        session.execute(
            sa.select(RedactedMessage.conversation_id, sa.func.count())
            .where(RedactedMessage.conversation_id.in_(ids))
            .group_by(RedactedMessage.conversation_id)
        ).all()
    )
    tags = transcripts.tags_of(session, ids)
    summaries = []
    for conversation, curation, phone in rows:
        context = redaction.Context(regions=redaction.regions_for(regions, phone))
        summaries.append(
            PublishedSummary(
                id=conversation.id,
                question=scrub(curation.summary_question, context),
                answer=scrub(curation.summary_answer, context),
                teaser=scrub(curation.teaser, context),
                tags=tags.get(conversation.id, []),
                rating=curation.rating,
                channel=conversation.channel,
                message_count=counts.get(conversation.id, 0),
                published_at=curation.published_at,
                started_at=conversation.created_at,
            )
        )
    return summaries


def published_page(
    session: Session, page: int, per_page: int, regions: str | None, search: str | None = None
) -> PublishedPage:
    """A page of published conversations, most recently published first.

    Args:
        session: The session to read with.
        page: The page, from 1.
        per_page: Conversations per page.
        regions: ``REDACTION_REGION`` (for the last guard).
        search: Only conversations whose summary or redacted messages contain it.

    Raises:
        ValueError: `regions` names an unknown region.
    """
    query = _published()
    if search is not None:
        query = query.where(
            sa.or_(
                transcripts.text_match(session, Curation.summary_question, search),
                transcripts.text_match(session, Curation.summary_answer, search),
                transcripts.text_match(session, Curation.teaser, search),
                sa.exists().where(
                    RedactedMessage.conversation_id == Conversation.id,
                    transcripts.text_match(session, RedactedMessage.text, search),
                ),
            )
        )
    total = session.scalar(sa.select(sa.func.count()).select_from(query.subquery())) or 0
    rows = session.execute(
        query.order_by(Curation.published_at.desc(), Conversation.id.desc())
        .limit(per_page)
        .offset((page - 1) * per_page)
    ).all()
    return PublishedPage(items=_summaries(session, list(rows), regions), total=total)


def published_conversation(
    session: Session, conversation_id: int, regions: str | None
) -> PublishedSummary | None:
    """One published conversation's summary, or None when it is not published.

    Raises:
        ValueError: `regions` names an unknown region.
    """
    row = session.execute(_published().where(Conversation.id == conversation_id)).first()
    return None if row is None else _summaries(session, [row], regions)[0]


def published_messages(
    session: Session, conversation_id: int, regions: str | None
) -> list[PublishedMessage] | None:
    """The redacted messages of a published conversation, oldest first (None: not published).

    Raises:
        ValueError: `regions` names an unknown region.
    """
    published = session.execute(
        sa.select(Curation.published, Contact.phone)
        .join(Conversation, Conversation.id == Curation.conversation_id)
        .outerjoin(Contact, Contact.id == Conversation.contact_id)
        .where(Curation.conversation_id == conversation_id)
    ).first()
    if published is None or not published.published:
        return None
    phone = published.phone
    context = redaction.Context(regions=redaction.regions_for(regions, phone))
    rows = session.execute(
        sa.select(Message.id, Message.author, Message.created_at, RedactedMessage.text)
        .join(RedactedMessage, RedactedMessage.message_id == Message.id)
        .where(Message.conversation_id == conversation_id)
        .order_by(Message.created_at, Message.id)
    ).all()
    return [
        PublishedMessage(
            id=message_id,
            from_contact=author == "contact",
            sent_at=created_at,
            text=scrub(text, context),
        )
        for message_id, author, created_at, text in rows
    ]


@dataclass(frozen=True)
class ConversationPage:
    """A page of one conversation's messages, newest first (internal API).

    Attributes:
        conversation: The conversation.
        messages: At most the page size of its messages, unredacted.
        next_cursor: The cursor of the older messages, or None when there are none.
    """

    conversation: Conversation
    messages: list[Message]
    next_cursor: str | None


def contact_id(session: Session, contact_id: int | None, phone: str | None) -> int | None:
    """The id of the contact given by id or by phone (``whatsapp:`` allowed), if it exists."""
    if contact_id is not None:
        return session.scalar(sa.select(Contact.id).where(Contact.id == contact_id))
    _, number = parse_address((phone or "").strip())
    return session.scalar(sa.select(Contact.id).where(Contact.phone == number))


def recent_messages(
    session: Session,
    contact_id: int,
    source: str | None,
    cursors: dict[str, str],
    page_size: int,
) -> list[ConversationPage]:
    """A contact's conversations, most recent first, each with a page of its messages.

    Args:
        session: The session to read with.
        contact_id: The contact.
        source: Only conversations on this channel (``whatsapp``, ``sms``), or all.
        cursors: Per conversation id (text), the cursor of a previous answer: the
            page of messages older than it.
        page_size: Messages per conversation.
    """
    query = sa.select(Conversation).where(Conversation.contact_id == contact_id)
    if source:
        query = query.where(Conversation.channel == source)
    conversations = session.scalars(
        query.order_by(Conversation.last_message_at.desc(), Conversation.id.desc())
    ).all()
    pages = []
    for conversation in conversations:
        condition = [Message.conversation_id == conversation.id]
        cursor = cursors.get(str(conversation.id))
        if cursor:
            condition.append(Message.id < int(cursor))
        rows = session.scalars(
            sa.select(Message).where(*condition).order_by(Message.id.desc()).limit(page_size + 1)
        ).all()
        more = len(rows) > page_size
        rows = rows[:page_size]
        pages.append(
            ConversationPage(
                conversation=conversation,
                messages=list(rows),
                next_cursor=str(rows[-1].id) if more and rows else None,
            )
        )
    return pages
