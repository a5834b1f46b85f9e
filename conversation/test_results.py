"""The last result of each conversation test, kept for the console (`models.FlowTestRun`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from models.flow_tests import FlowTestRun

log = logging.getLogger("parley.flow_tests")

#: The most report text kept per run.
MAX_REPORT = 20_000


@dataclass(frozen=True)
class Outcome:
    """One test's result, ready to store.

    Attributes:
        path: The test file.
        name: The conversation's name.
        flow_id: Its flow.
        passed: Whether it passed.
        pass_rate: Share of runs that passed.
        runs: How many runs.
        flow_version: The flow version it ran on.
        report: What failed, or empty.
    """

    path: Path
    name: str
    flow_id: str | None
    passed: bool
    pass_rate: float
    runs: int
    flow_version: str | None
    report: str

    @classmethod
    def scripted(cls, path: Path, spec: Any, result: Any) -> Outcome:
        """The outcome of one scripted run of a conversation test.

        Args:
            path: The test file.
            spec: The conversation (`conversation.flow_tests.ConversationSpec`).
            result: Its run (`conversation.flow_tests.ConversationResult`).
        """
        return cls(
            path,
            spec.name,
            spec.flow,
            result.passed,
            1.0 if result.passed else 0.0,
            1,
            result.flow_version,
            result.report,
        )


def relative(path: Path, tests_dir: Path) -> str:
    """`path` as the console names it: relative to the tests folder when inside it."""
    try:
        return str(path.resolve().relative_to(tests_dir.resolve()))
    except ValueError:
        return str(path)


def record(session: Session, tests_dir: Path, mode: str, outcomes: list[Outcome]) -> bool:
    """Store the outcomes of a run (``scripted`` or ``live``) and commit.

    Returns:
        False when the database cannot be written (not migrated, unreachable):
        the run itself still counts, only the console will not show it.
    """
    try:
        session.add_all(
            FlowTestRun(
                path=relative(outcome.path, tests_dir)[:300],
                name=outcome.name[:300],
                flow_id=outcome.flow_id,
                mode=mode,
                passed=outcome.passed,
                pass_rate=outcome.pass_rate,
                runs=outcome.runs,
                flow_version=outcome.flow_version,
                report=outcome.report[:MAX_REPORT],
            )
            for outcome in outcomes
        )
        session.commit()
    except SQLAlchemyError as error:
        session.rollback()
        log.warning("flow_tests.results_not_stored reason=%s", type(error).__name__)
        return False
    return True


def latest(session: Session) -> dict[tuple[str, str, str], FlowTestRun]:
    """The last run of each test and mode: ``(path, name, mode)`` → run."""
    newest = (
        sa.select(sa.func.max(FlowTestRun.id))
        .group_by(FlowTestRun.path, FlowTestRun.name, FlowTestRun.mode)
        .scalar_subquery()
    )
    rows = session.scalars(sa.select(FlowTestRun).where(FlowTestRun.id.in_(newest)))
    return {(row.path, row.name, row.mode): row for row in rows}
