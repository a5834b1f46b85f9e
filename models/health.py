"""The health check's read: whether the database answers."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session


def database_answers(session: Session) -> bool:
    """Whether the database answers a trivial query; ends the session's transaction."""
    try:
        session.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        session.rollback()
        return False
    session.rollback()
    return True
