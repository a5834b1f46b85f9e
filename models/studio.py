"""The table of Studio-style execution requests (``POST /api/v1/executions``)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.entities import Base, JSONType, Timestamp, utcnow


class ExecutionRequest(Base):
    """One ``POST /api/v1/executions``, kept by its client-supplied idempotency key.

    A request repeated with the same key answers what the first one did and
    starts nothing (like Twilio's ``I-Twilio-Idempotency-Token``).
    """

    __tablename__ = "studio_execution_request"

    id: Mapped[int] = mapped_column(primary_key=True)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255), unique=True)
    contact_id: Mapped[int] = mapped_column(sa.ForeignKey("contact.id", ondelete="CASCADE"))
    flow_id: Mapped[str] = mapped_column(sa.String(64))
    execution_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("execution.id", ondelete="SET NULL")
    )
    parameters: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    message_ids: Mapped[list[int]] = mapped_column(JSONType, default=list)
    """The outbound messages the execution's first turn stored, in order."""
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
