"""Control events of a conversation: who speaks to the contact, the bot or an agent.

Every change of `models.entities.Conversation.controlled_by` is one
`ControlEvent` row written in the same transaction (handover/control.py), so
the transcript says who took or returned control, and when.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.entities import Base, JSONType, Timestamp, utcnow

#: The control events, in the order they usually come.
CONTROL_KINDS = ("handover", "handover_confirmed", "takeover", "handback", "handover_expired")


class ControlEvent(Base):
    """A system event of a conversation's transcript: control changed hands."""

    __tablename__ = "control_event"
    __table_args__ = (sa.Index("ix_control_event_conversation", "conversation_id", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    conversation_id: Mapped[int] = mapped_column(
        sa.ForeignKey("conversation.id", ondelete="CASCADE")
    )
    kind: Mapped[str] = mapped_column(sa.String(32))
    """One of `CONTROL_KINDS`."""
    actor: Mapped[str] = mapped_column(sa.String(64))
    """Who did it: ``bot``, ``system`` (a timer) or ``agent:<id>``."""
    target: Mapped[str] = mapped_column(sa.String(64))
    """Who has control afterwards, or is asked to take it: ``bot``,
    ``agent:<id>`` or ``queue:<name>``."""
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    """E.g. ``{"step": "menu"}`` for a handback to a step, the paused timer's
    ``remaining_seconds``."""
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class AgentPresence(Base):
    """Whether a console user takes conversations now, and when they last got one."""

    __tablename__ = "agent_presence"

    user_id: Mapped[int] = mapped_column(
        sa.ForeignKey("admin_user.id", ondelete="CASCADE"), primary_key=True
    )
    available: Mapped[bool] = mapped_column(default=False)
    """Marked available in the inbox: a ``handover: available`` step may pick them."""
    last_assigned_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    """When a handover last went to them (None: never, so they waited longest)."""
