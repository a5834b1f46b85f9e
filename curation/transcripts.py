"""Finding conversations and reading their transcripts (the admin console's queries).

Search is full-text on PostgreSQL (``to_tsvector('simple', body) @@
plainto_tsquery('simple', query)``: every word must appear, in any order) and
a case-insensitive ``LIKE`` on the whole phrase elsewhere (SQLite).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models.curation import AuditEvent, ConversationTag, Curation
from models.entities import Contact, Conversation, Message

PAGE_SIZE = 25


@dataclass(frozen=True)
class Filters:
    """What to look for; every field is optional.

    Attributes:
        query: Words the conversation's messages contain.
        flow: A flow id some message of the conversation belongs to.
        step: A step id some outbound message came from (the step was reached).
        channel: ``whatsapp`` or ``sms``.
        tag: A curation tag.
        rating: The lowest rating (1 to 5).
        published: True: published only; False: unpublished only.
        moderated: Only conversations with a moderation decision
            (`Message.moderation`: something was flagged, or a check failed).
        since: Last message on or after this date.
        until: Last message on or before this date.
        page: 1-based page number.
    """

    query: str = ""
    flow: str = ""
    step: str = ""
    channel: str = ""
    tag: str = ""
    rating: int | None = None
    published: bool | None = None
    moderated: bool = False
    since: dt.date | None = None
    until: dt.date | None = None
    page: int = 1


@dataclass
class ConversationRow:
    """One line of the conversation list."""

    id: int
    channel: str
    contact_id: int
    contact_name: str | None
    contact_phone: str
    last_message_at: dt.datetime
    message_count: int
    published: bool
    rating: int | None
    question: str
    tags: list[str] = field(default_factory=list)


@dataclass
class Page:
    """A page of results."""

    rows: list[ConversationRow]
    total: int
    page: int
    pages: int


def text_match(session: Session, column: sa.ColumnElement, query: str) -> sa.ColumnElement[bool]:
    """A condition: `column` contains `query` (full-text on PostgreSQL, LIKE elsewhere)."""
    if session.get_bind().dialect.name == "postgresql":
        return sa.func.to_tsvector("simple", column).op("@@")(
            sa.func.plainto_tsquery("simple", query)
        )
    words = query.split() or [query]
    return sa.and_(
        *(
            column.ilike(
                "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",
                escape="\\",
            )
            for word in words
        )
    )


def _conditions(session: Session, filters: Filters) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []

    def has_message(*where: sa.ColumnElement[bool]) -> sa.ColumnElement[bool]:
        return sa.exists().where(Message.conversation_id == Conversation.id, *where)

    if filters.query.strip():
        conditions.append(has_message(text_match(session, Message.body, filters.query.strip())))
    if filters.flow:
        conditions.append(has_message(Message.flow_id == filters.flow))
    if filters.step:
        conditions.append(has_message(Message.step_id == filters.step))
    if filters.channel:
        conditions.append(Conversation.channel == filters.channel)
    if filters.tag:
        conditions.append(
            sa.exists().where(
                ConversationTag.conversation_id == Conversation.id,
                ConversationTag.tag == filters.tag,
            )
        )
    if filters.rating is not None:
        conditions.append(Curation.rating >= filters.rating)
    if filters.published is True:
        conditions.append(Curation.published.is_(True))
    elif filters.published is False:
        conditions.append(sa.or_(Curation.published.is_(None), Curation.published.is_(False)))
    if filters.moderated:
        conditions.append(has_message(Message.moderation.is_not(None)))
    if filters.since:
        start = dt.datetime.combine(filters.since, dt.time(), dt.UTC)
        conditions.append(Conversation.last_message_at >= start)
    if filters.until:
        end = dt.datetime.combine(filters.until + dt.timedelta(days=1), dt.time(), dt.UTC)
        conditions.append(Conversation.last_message_at < end)
    return conditions


def search(session: Session, filters: Filters, page_size: int = PAGE_SIZE) -> Page:
    """Conversations matching `filters`, most recent first, one page of them."""
    conditions = _conditions(session, filters)
    base = (
        sa.select(Conversation.id)
        .join(Contact, Contact.id == Conversation.contact_id)
        .outerjoin(Curation, Curation.conversation_id == Conversation.id)
        .where(*conditions)
    )
    total = session.scalar(sa.select(sa.func.count()).select_from(base.subquery())) or 0
    pages = max(1, -(-total // page_size))
    page = min(max(1, filters.page), pages)
    counts = (
        sa.select(Message.conversation_id, sa.func.count().label("n"))
        .group_by(Message.conversation_id)
        .subquery()
    )
    rows = session.execute(
        sa.select(
            Conversation.id,
            Conversation.channel,
            Contact.id,
            Contact.name,
            Contact.phone,
            Conversation.last_message_at,
            sa.func.coalesce(counts.c.n, 0),
            sa.func.coalesce(Curation.published, False),
            Curation.rating,
            sa.func.coalesce(Curation.summary_question, ""),
        )
        .join(Contact, Contact.id == Conversation.contact_id)
        .outerjoin(Curation, Curation.conversation_id == Conversation.id)
        .outerjoin(counts, counts.c.conversation_id == Conversation.id)
        .where(*conditions)
        .order_by(Conversation.last_message_at.desc(), Conversation.id.desc())
        .limit(page_size)
        .offset((page - 1) * page_size)
    ).all()
    result = [ConversationRow(*row) for row in rows]
    tags = tags_of(session, [row.id for row in result])
    for row in result:
        row.tags = tags.get(row.id, [])
    return Page(rows=result, total=total, page=page, pages=pages)


def tags_of(session: Session, conversation_ids: list[int]) -> dict[int, list[str]]:
    """The tags of each conversation, sorted."""
    if not conversation_ids:
        return {}
    found: dict[int, list[str]] = {}
    for conversation_id, tag in session.execute(
        sa.select(ConversationTag.conversation_id, ConversationTag.tag)
        .where(ConversationTag.conversation_id.in_(conversation_ids))
        .order_by(ConversationTag.tag)
    ):
        found.setdefault(conversation_id, []).append(tag)
    return found


def choices(session: Session) -> dict[str, list[str]]:
    """The values the filters offer: flows, steps and tags in use."""
    flows = session.scalars(
        sa.select(Message.flow_id).where(Message.flow_id.is_not(None)).distinct()
    ).all()
    steps = session.scalars(
        sa.select(Message.step_id).where(Message.step_id.is_not(None)).distinct()
    ).all()
    tags = session.scalars(sa.select(ConversationTag.tag).distinct()).all()
    return {"flows": sorted(flows), "steps": sorted(steps), "tags": sorted(tags)}


def messages(session: Session, conversation_id: int) -> list[Message]:
    """The conversation's messages, oldest first."""
    return list(
        session.scalars(
            sa.select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.created_at, Message.id)
        )
    )


@dataclass
class ConversationDetail:
    """A conversation as its transcript page shows it.

    Attributes:
        conversation: The conversation.
        contact: Its contact.
        curation: Its curation, if anyone curated it yet.
        tags: Its tags, sorted.
        events: Its last 20 audit events, newest first.
    """

    conversation: Conversation
    contact: Contact
    curation: Curation | None
    tags: list[str]
    events: list[AuditEvent]


def detail(session: Session, conversation_id: int) -> ConversationDetail | None:
    """The conversation with its contact, curation, tags and recent audit events (None: none)."""
    row = session.get(Conversation, conversation_id)
    if row is None:
        return None
    events = session.scalars(
        sa.select(AuditEvent)
        .where(AuditEvent.conversation_id == conversation_id)
        .order_by(AuditEvent.id.desc())
        .limit(20)
    ).all()
    return ConversationDetail(
        conversation=row,
        contact=session.get_one(Contact, row.contact_id),
        curation=session.get(Curation, conversation_id),
        tags=tags_of(session, [conversation_id]).get(conversation_id, []),
        events=list(events),
    )


def contact_exists(session: Session, contact_id: int) -> bool:
    """Whether a contact with this id exists."""
    return session.get(Contact, contact_id) is not None
