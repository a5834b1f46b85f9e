"""Flow versions: each loaded flow file's content is kept, so executions finish on theirs.

An execution names the version it started on (``execution.flow_version``, the
file's content hash). When the app starts, every flow it loads is stored as a
version (`store_versions`); `SqlFlowArchive` gives the runner the YAML of
older versions (`engine.flow.FlowSet.resolve`), and `waiting_by_step` counts
who is where, per flow and version (``flask flows status``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from engine.flow import Flow
from models.entities import OPEN_STATUSES, Execution, utcnow
from models.runtime import FlowVersion

log = logging.getLogger("parley.versions")


def store_versions(session: Session, flows: Iterable[Flow]) -> int:
    """Store each flow's current file as a version, once (safe from many processes at once).

    The caller commits.

    Returns:
        How many versions were new.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    added = 0
    for flow in flows:
        text = Path(flow.source).read_text(encoding="utf-8")
        if hashlib.sha256(text.encode()).hexdigest()[:12] != flow.version:
            # Edited since it was loaded: that content is not what this app runs.
            log.warning("flow.version.changed_on_disk flow=%s", flow.id)
            continue
        stored = session.execute(
            insert(FlowVersion)
            .values(
                flow_id=flow.id,
                version=flow.version,
                source=str(flow.source)[:500],
                text=text,
                loaded_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["flow_id", "version"])
            .returning(FlowVersion.id)
        ).scalar()
        added += stored is not None
    return added


@dataclass
class SqlFlowArchive:
    """`engine.ports.FlowArchive` over the ``flow_version`` table.

    Args:
        session: A callable returning the session to read with (the app's
            scoped session, so each request or command uses its own).
    """

    session: Callable[[], Session]

    def flow_text(self, flow_id: str, version: str) -> str | None:
        """The stored YAML of `flow_id` at `version`, or None."""
        return self.session().scalar(
            sa.select(FlowVersion.text).where(
                FlowVersion.flow_id == flow_id, FlowVersion.version == version
            )
        )


@dataclass(frozen=True)
class WaitingCount:
    """How many contacts an open execution holds at one step of one flow version.

    Attributes:
        flow_id: The flow.
        version: The version their executions run on.
        step: The step they are at (waiting at, mostly).
        contacts: How many contacts.
        loaded_at: When the version was first loaded, if it is stored.
    """

    flow_id: str
    version: str
    step: str
    contacts: int
    loaded_at: dt.datetime | None


def waiting_by_step(session: Session) -> list[WaitingCount]:
    """Contacts in an open execution (active, waiting, handed over), by flow, version, step."""
    rows = session.execute(
        sa.select(
            Execution.flow_id,
            Execution.flow_version,
            Execution.current_step,
            sa.func.count(sa.distinct(Execution.contact_id)),
            FlowVersion.loaded_at,
        )
        .outerjoin(
            FlowVersion,
            sa.and_(
                FlowVersion.flow_id == Execution.flow_id,
                FlowVersion.version == Execution.flow_version,
            ),
        )
        .where(Execution.status.in_(OPEN_STATUSES))
        .group_by(
            Execution.flow_id,
            Execution.flow_version,
            Execution.current_step,
            FlowVersion.loaded_at,
        )
        .order_by(Execution.flow_id, FlowVersion.loaded_at, Execution.current_step)
    ).all()
    return [WaitingCount(*row) for row in rows]


def stored_versions(session: Session) -> list[FlowVersion]:
    """Every stored version, by flow and then oldest first."""
    return list(
        session.scalars(sa.select(FlowVersion).order_by(FlowVersion.flow_id, FlowVersion.loaded_at))
    )
