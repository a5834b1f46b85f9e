"""The tables: Contact, Conversation, Message, Execution (DESIGN.md vocabulary)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
Timestamp = sa.DateTime(timezone=True)

#: Execution statuses that still hold the contact's place in a flow.
OPEN_STATUSES = ("active", "waiting", "handed_over")


def utcnow() -> dt.datetime:
    """The current time in UTC, timezone-aware."""
    return dt.datetime.now(dt.UTC)


def as_utc(moment: dt.datetime) -> dt.datetime:
    """A stored time, timezone-aware: SQLite gives naive datetimes back (stored in UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    """Declarative base with a naming convention, so Alembic names constraints."""

    metadata = sa.MetaData(
        naming_convention={
            "ix": "ix_%(column_0_label)s",
            "uq": "uq_%(table_name)s_%(column_0_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


class Contact(Base):
    """A person, keyed by E.164 phone number, whatever the channel."""

    __tablename__ = "contact"

    id: Mapped[int] = mapped_column(primary_key=True)
    phone: Mapped[str] = mapped_column(sa.String(16), unique=True)
    """E.164, e.g. ``+15551234567`` (at most 15 digits and the ``+``)."""
    name: Mapped[str | None] = mapped_column(sa.String(200))
    """The WhatsApp profile name, when known."""
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)

    conversations: Mapped[list[Conversation]] = relationship(back_populates="contact")


class TurnLease(Base):
    """Who runs the contact's turns now: one turn at a time, with no lock held across it.

    A turn claims the lease in a short transaction (`models.store.SqlStore.claim`),
    runs the engine with no database connection (model and HTTP calls happen
    then), and commits only while its `token` is still the lease's: a turn that
    outlived its lease, whose contact another worker has since claimed, writes
    nothing and runs again. A worker that dies leaves a lease that expires.
    """

    __tablename__ = "turn_lease"

    contact_id: Mapped[int] = mapped_column(
        sa.ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True
    )
    token: Mapped[int] = mapped_column(sa.BigInteger, default=1)
    """The fencing token: one more at every claim, never reused."""
    owner: Mapped[str | None] = mapped_column(sa.String(64))
    """Who holds it (host, process and thread), for operators; None when free."""
    expires_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    """When it may be claimed again even if not released; None when free."""


class Conversation(Base):
    """A contact's thread on one channel with one of our sender addresses."""

    __tablename__ = "conversation"
    __table_args__ = (sa.UniqueConstraint("contact_id", "channel", "address"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(sa.ForeignKey("contact.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(sa.String(16))
    """``whatsapp`` or ``sms``."""
    address: Mapped[str] = mapped_column(sa.String(64))
    """Our side: the Twilio number or sender the contact wrote to (``To``)."""
    controlled_by: Mapped[str] = mapped_column(sa.String(64), default="bot")
    """``bot``, or ``agent:<id>`` while a human agent has the conversation."""
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    last_message_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    contact: Mapped[Contact] = relationship(back_populates="conversations")


class Message(Base):
    """One inbound or outbound message of a conversation."""

    __tablename__ = "message"
    __table_args__ = (sa.Index("ix_message_contact_created", "contact_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        sa.ForeignKey("conversation.id", ondelete="CASCADE"), index=True
    )
    contact_id: Mapped[int] = mapped_column(sa.ForeignKey("contact.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(sa.String(8))
    """``inbound`` or ``outbound``."""
    author: Mapped[str] = mapped_column(sa.String(64))
    """``contact``, ``bot``, ``agent:<id>`` or ``system``."""
    body: Mapped[str] = mapped_column(sa.Text, default="")
    media: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    """``{"urls": [...]}`` for inbound media, with ``types``, ``button``, ``location``,
    and a voice note's ``transcript`` (``{"text" or "error", "model", "bytes", "ms"}``)."""
    message_sid: Mapped[str | None] = mapped_column(sa.String(64), unique=True)
    """Twilio's ``MessageSid`` (unique); None until Twilio assigns one."""
    status: Mapped[str] = mapped_column(sa.String(16))
    """Inbound: ``received``. Outbound: Twilio's delivery status (``queued``, ``sent``...)."""
    error_code: Mapped[int | None] = mapped_column()
    """Twilio's ``ErrorCode`` for a failed delivery."""
    turn_status: Mapped[str | None] = mapped_column(sa.String(16))
    """Inbound only: ``pending``, ``done``, ``failed`` or ``skipped`` (no bot turn)."""
    execution_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("execution.id", ondelete="SET NULL")
    )
    flow_id: Mapped[str | None] = mapped_column(sa.String(64))
    step_id: Mapped[str | None] = mapped_column(sa.String(64))
    """The step that produced an outbound message."""
    model: Mapped[str | None] = mapped_column(sa.String(100))
    prompt_tokens: Mapped[int | None] = mapped_column()
    completion_tokens: Mapped[int | None] = mapped_column()
    latency_ms: Mapped[int | None] = mapped_column()
    """Wall time of the LLM call that wrote the message, in milliseconds."""
    llm_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    """Inbound only: the model calls of its turn, in order, as the model answered
    (`engine.runner.LLMCall.recorded`): what a conversation test scripts."""
    moderation: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONType)
    """Inbound only: the moderation decisions of its turn (`engine.moderation.Decision.recorded`):
    direction, step, category, score, action; None when nothing was flagged."""
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class Execution(Base):
    """A contact's run through one flow (Twilio Studio's word)."""

    __tablename__ = "execution"
    __table_args__ = (sa.Index("ix_execution_contact_status", "contact_id", "status"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(sa.ForeignKey("contact.id", ondelete="CASCADE"))
    flow_id: Mapped[str] = mapped_column(sa.String(64))
    flow_version: Mapped[str] = mapped_column(sa.String(64))
    current_step: Mapped[str] = mapped_column(sa.String(64))
    status: Mapped[str] = mapped_column(sa.String(16))
    """``active``, ``waiting``, ``ended``, ``handed_over`` or ``failed``."""
    variables: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    step_results: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    step_state: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    wait_deadline: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    error: Mapped[str | None] = mapped_column(sa.Text)
    """Why the execution failed, for a later look."""
    started_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)
    ended_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
