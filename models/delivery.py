"""Sends through the Twilio REST API, recorded before and after the call.

A `Delivery` row is written (state ``sending``, with an idempotency key) and
committed before ``messages.create`` is called, and updated with the outcome
after it; a task that runs twice never sends a message whose delivery was
already attempted (see `delivery.outbox`).
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.entities import Base, Timestamp, utcnow

#: Delivery states: ``sending`` (the REST call is under way, or was cut short),
#: ``sent`` (Twilio accepted it: the message has its ``MessageSid``), ``failed``
#: (Twilio refused it, or it was not sent; `Delivery.error` says why) and
#: ``unknown`` (a worker died during the call; never sent again).
DELIVERY_STATES = ("sending", "sent", "failed", "unknown")


class Delivery(Base):
    """One outbound message's send through the Twilio REST API."""

    __tablename__ = "delivery"

    id: Mapped[int] = mapped_column(primary_key=True)
    message_id: Mapped[int] = mapped_column(
        sa.ForeignKey("message.id", ondelete="CASCADE"), unique=True
    )
    """The outbound message (one delivery per message: sends are never repeated)."""
    idempotency_key: Mapped[str] = mapped_column(sa.String(64), unique=True)
    """Random, written before the call and carried in the status callback URL, so
    a callback can name the message even when the worker died before it stored
    the ``MessageSid``."""
    state: Mapped[str] = mapped_column(sa.String(16), default="sending")
    """One of `DELIVERY_STATES`."""
    attempts: Mapped[int] = mapped_column(default=0)
    """HTTP attempts made (retries on Twilio 429/5xx included)."""
    error: Mapped[str | None] = mapped_column(sa.Text)
    """Why it failed, e.g. ``not sent: outside the 24-hour window``."""
    attempted_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
