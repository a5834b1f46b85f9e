"""Ending a contact's open executions, so that their next message starts a flow afresh.

Used by ``flask chat``'s ``/reset``; a contact's own reset keyword goes through
the turn service's responders instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models.entities import OPEN_STATUSES, Contact, Execution, utcnow


def end_open_executions(session: Session, phone: str) -> int:
    """End every open execution of the contact with this E.164 phone; the caller commits.

    Returns:
        How many executions were ended (0 for an unknown phone).
    """
    contact_id = session.scalar(sa.select(Contact.id).where(Contact.phone == phone))
    if contact_id is None:
        return 0
    result = session.execute(
        sa.update(Execution)
        .where(Execution.contact_id == contact_id, Execution.status.in_(OPEN_STATUSES))
        .values(status="ended", ended_at=utcnow(), wait_deadline=None)
    )
    return result.rowcount  # type: ignore[attr-defined]
