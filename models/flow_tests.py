"""The last results of conversation tests (`conversation.flow_tests`), for the console."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.entities import Base, Timestamp, utcnow


class FlowTestRun(Base):
    """One run of one conversation test, scripted or live (``flask flows test``, the console).

    The test files are the truth about what a test says; this table only keeps
    how their runs went, so that the console can show each test's last result.
    """

    __tablename__ = "flow_test_run"
    __table_args__ = (sa.Index("ix_flow_test_run_test", "path", "name", "mode", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(sa.String(300))
    """The test file, relative to the tests folder it was run from."""
    name: Mapped[str] = mapped_column(sa.String(300))
    """The conversation's name in the file."""
    flow_id: Mapped[str | None] = mapped_column(sa.String(64))
    mode: Mapped[str] = mapped_column(sa.String(16))
    """``scripted`` (the model's answers come from the test) or ``live``."""
    passed: Mapped[bool] = mapped_column()
    """Scripted: every check held. Live: the pass rate reached the minimum asked for."""
    pass_rate: Mapped[float] = mapped_column(sa.Float)
    """The share of runs (``--repeat``) in which every check held: 0 to 1."""
    runs: Mapped[int] = mapped_column(default=1)
    flow_version: Mapped[str | None] = mapped_column(sa.String(64))
    """The version of the flow it ran on."""
    report: Mapped[str] = mapped_column(sa.Text, default="")
    """What failed, as the command printed it (empty when everything passed)."""
    ran_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
