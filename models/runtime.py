"""The flow runtime's tables: stored flow versions and contacts who opted out."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.entities import Base, Timestamp, utcnow


class FlowVersion(Base):
    """The content of one version of a flow file, stored when an app loads it.

    Executions name their version (``execution.flow_version``, the content
    hash); the YAML kept here lets a contact finish on the version they started
    after the file has changed.
    """

    __tablename__ = "flow_version"
    __table_args__ = (sa.UniqueConstraint("flow_id", "version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    flow_id: Mapped[str] = mapped_column(sa.String(64))
    """The flow's ``id``."""
    version: Mapped[str] = mapped_column(sa.String(64))
    """The content hash of the file (`engine.flow.Flow.version`)."""
    source: Mapped[str] = mapped_column(sa.String(500))
    """The file it was read from."""
    text: Mapped[str] = mapped_column(sa.Text)
    """The YAML, exactly as read."""
    loaded_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    """When an app first loaded this version."""


class OptOut(Base):
    """A contact who sent an opt-out keyword (``STOP``…) and gets no messages until ``START``.

    One row per opted-out contact; opting in again deletes it.
    """

    __tablename__ = "opt_out"

    contact_id: Mapped[int] = mapped_column(
        sa.ForeignKey("contact.id", ondelete="CASCADE"), primary_key=True
    )
    keyword: Mapped[str] = mapped_column(sa.String(64))
    """The keyword the contact sent, as configured (e.g. ``STOP``)."""
    channel: Mapped[str] = mapped_column(sa.String(16))
    """The channel it came on (``whatsapp`` or ``sms``)."""
    confirmation: Mapped[str | None] = mapped_column(sa.Text)
    """The confirmation sent in answer, the one message that may still go out."""
    opted_out_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
