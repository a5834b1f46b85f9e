"""The admin console's tables: users, curation of conversations, and the audit trail.

A conversation's curation (summary, tags, rating, published) lives beside the
conversation, and each message's redacted text lives in `RedactedMessage`,
apart from the original `Message.body`: the public API reads only the latter.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.entities import Base, JSONType, Timestamp, utcnow

#: Roles of console users, from the most to the least powerful.
ROLES = ("admin", "curator", "agent")

#: The role a new user gets unless another is chosen: the least powerful.
DEFAULT_ROLE = "agent"


class User(Base):
    """A person who logs in to the admin console."""

    __tablename__ = "admin_user"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(sa.String(254), unique=True)
    """Lower-cased e-mail address; the login name."""
    name: Mapped[str | None] = mapped_column(sa.String(100))
    """How the console and the inbox show the user (the e-mail when unset)."""
    password_hash: Mapped[str] = mapped_column(sa.String(255))
    """Werkzeug's ``scrypt:...`` hash; never the password."""
    role: Mapped[str] = mapped_column(sa.String(16))
    """``admin``, ``curator`` or ``agent``."""
    active: Mapped[bool] = mapped_column(default=True)
    failed_logins: Mapped[int] = mapped_column(default=0)
    """Failed attempts in a row since the last successful login."""
    locked_until: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    """No longer set: the stored lock-out gave way to the login limits
    (`curation.login_limits`); cleared by the next successful login."""
    last_login_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)

    @property
    def display_name(self) -> str:
        """The user's name, or their e-mail when they have none."""
        return self.name or self.email


class Curation(Base):
    """What curators wrote about one conversation, and whether it is published."""

    __tablename__ = "curation"

    conversation_id: Mapped[int] = mapped_column(
        sa.ForeignKey("conversation.id", ondelete="CASCADE"), primary_key=True
    )
    summary_question: Mapped[str] = mapped_column(sa.Text, default="")
    summary_answer: Mapped[str] = mapped_column(sa.Text, default="")
    teaser: Mapped[str] = mapped_column(sa.Text, default="")
    rating: Mapped[int | None] = mapped_column()
    """1 (poor) to 5 (excellent), or None when not rated."""
    published: Mapped[bool] = mapped_column(default=False, index=True)
    published_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    updated_by: Mapped[str] = mapped_column(sa.String(254))
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class ConversationTag(Base):
    """One tag on a conversation."""

    __tablename__ = "conversation_tag"

    conversation_id: Mapped[int] = mapped_column(
        sa.ForeignKey("conversation.id", ondelete="CASCADE"), primary_key=True
    )
    tag: Mapped[str] = mapped_column(sa.String(64), primary_key=True, index=True)


class RedactedMessage(Base):
    """A message's text with private details replaced, as a curator accepted it."""

    __tablename__ = "redacted_message"

    message_id: Mapped[int] = mapped_column(
        sa.ForeignKey("message.id", ondelete="CASCADE"), primary_key=True
    )
    conversation_id: Mapped[int] = mapped_column(
        sa.ForeignKey("conversation.id", ondelete="CASCADE"), index=True
    )
    text: Mapped[str] = mapped_column(sa.Text)
    """The redacted text, e.g. ``Call me on [PHONE]``."""
    reviewed_by: Mapped[str] = mapped_column(sa.String(254))
    """Who accepted or wrote it (``auto`` when applied at publish time)."""
    reviewed_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class AuditEvent(Base):
    """Who did what and when: curation changes, publishing, data erasure."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(primary_key=True)
    actor: Mapped[str] = mapped_column(sa.String(254))
    """A user's e-mail, ``contact:<id>`` for a contact's own request, or ``cli``."""
    action: Mapped[str] = mapped_column(sa.String(64), index=True)
    """E.g. ``curation.summary``, ``curation.publish``, ``contact.erase``."""
    conversation_id: Mapped[int | None] = mapped_column(index=True)
    """No foreign key: the record outlives an erased conversation."""
    contact_id: Mapped[int | None] = mapped_column()
    """No foreign key, for the same reason; never the phone number."""
    detail: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
