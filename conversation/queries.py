"""Reads and the one reset the simulator makes on a phone number's executions (web/simulator/)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from engine.ports import ExecutionState
from models import OPEN_STATUSES, Contact, Execution
from models.entities import utcnow
from models.store import SqlStore


def contact_id(session: Session, phone: str) -> int | None:
    """The id of the contact with this E.164 number, if there is one."""
    return session.scalar(sa.select(Contact.id).where(Contact.phone == phone))


def open_execution(session: Session, phone: str) -> ExecutionState | None:
    """The open execution of the contact with this number, if any."""
    found = contact_id(session, phone)
    if found is None:
        return None
    return SqlStore(session).active_execution(found)


def end_open_executions(session: Session, phone: str) -> int:
    """End every open execution of the contact with this number; the caller commits.

    Returns:
        How many executions were ended (0 when the number is no contact's).
    """
    found = contact_id(session, phone)
    if found is None:
        return 0
    return session.execute(
        sa.update(Execution)
        .where(Execution.contact_id == found, Execution.status.in_(OPEN_STATUSES))
        .values(status="ended", ended_at=utcnow())
    ).rowcount
