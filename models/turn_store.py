"""A turn's own SQL: the lease (claim, fence, release) and the view a turn starts from.

See `models.entities.TurnLease` for why a lease and not a row lock: the
connection goes back to the pool while the model answers.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from engine.ports import Channel
from models.entities import Contact, Conversation, TurnLease
from models.store import STAMP_CONVERSATION

contact_table: sa.Table = Contact.__table__  # type: ignore[assignment]
conversation_table: sa.Table = Conversation.__table__  # type: ignore[assignment]

lease_table: sa.Table = TurnLease.__table__  # type: ignore[assignment]
_lease = lease_table.c

_CLAIM: dict[str, Any] = {}

#: Released (or fenced) only while the token is still the caller's.
_RELEASE = (
    sa.update(lease_table)
    .where(
        _lease.contact_id == sa.bindparam("contact"), _lease.token == sa.bindparam("lease_token")
    )
    .values(owner=None, expires_at=None)
)


def _claim_statement(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO UPDATE ... WHERE free RETURNING token, built once per dialect.

    One statement, race-free on PostgreSQL and SQLite (3.35+): a new contact's
    row is inserted with token 1; an existing row is taken, with its token one
    higher, only when it is free or expired; otherwise nothing is returned.
    """
    if dialect not in _CLAIM:
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(lease_table)
        insert = insert.values(
            contact_id=sa.bindparam("contact"),
            token=1,
            owner=sa.bindparam("owner"),
            expires_at=sa.bindparam("expires_at", type_=_lease.expires_at.type),
        )
        now = sa.bindparam("now", type_=_lease.expires_at.type)
        _CLAIM[dialect] = insert.on_conflict_do_update(
            index_elements=["contact_id"],
            set_={
                "token": _lease.token + 1,
                "owner": insert.excluded.owner,
                "expires_at": insert.excluded.expires_at,
            },
            where=sa.or_(_lease.expires_at.is_(None), _lease.expires_at <= now),
        ).returning(_lease.token)
    return _CLAIM[dialect]


@dataclass(frozen=True)
class TurnView:
    """What a turn reads before the engine runs: who, where, and who has control.

    Attributes:
        contact_id: The contact.
        phone: Its E.164 number.
        name: Its WhatsApp profile name, if known.
        conversation_id: The conversation the turn speaks in.
        channel: ``whatsapp`` or ``sms``.
        address: Our side of it (the Twilio number or sender).
        controlled_by: ``bot``, or who holds the conversation (``agent:<id>``,
            ``queue:<name>``).
    """

    contact_id: int
    phone: str
    name: str | None
    conversation_id: int
    channel: Channel
    address: str
    controlled_by: str

    @classmethod
    def of(cls, row: Any) -> TurnView:
        """The view in a row with these attributes' names (``_VIEW_COLUMNS``, or more)."""
        return cls(
            contact_id=row.contact_id,
            phone=row.phone,
            name=row.name,
            conversation_id=row.conversation_id,
            channel=row.channel,
            address=row.address,
            controlled_by=row.controlled_by,
        )


_VIEW_COLUMNS = (
    contact_table.c.id.label("contact_id"),
    contact_table.c.phone,
    contact_table.c.name,
    conversation_table.c.id.label("conversation_id"),
    conversation_table.c.channel,
    conversation_table.c.address,
    conversation_table.c.controlled_by,
)
_VIEW = (
    sa.select(*_VIEW_COLUMNS)
    .join(conversation_table, conversation_table.c.contact_id == contact_table.c.id)
    .where(conversation_table.c.id == sa.bindparam("conversation"))
)
_LATEST_VIEW = (
    sa.select(*_VIEW_COLUMNS)
    .join(conversation_table, conversation_table.c.contact_id == contact_table.c.id)
    .where(contact_table.c.id == sa.bindparam("contact"))
    .order_by(conversation_table.c.last_message_at.desc(), conversation_table.c.id.desc())
    .limit(1)
)
#: Who has the conversation, read at commit: FOR SHARE waits for a control
#: change under way (it holds the row FOR NO KEY UPDATE) and holds off the next.
_CONTROLLER = (
    sa.select(conversation_table.c.controlled_by)
    .where(conversation_table.c.id == sa.bindparam("conversation"))
    .with_for_update(read=True)
)


#: `_CONTROLLER` for a turn that answers an inbound message: the row is locked
#: by the UPDATE that moves last_message_at up to the message's arrival (one
#: statement for both; the lock conflicts with a control change as FOR SHARE does).
_STAMP_AND_CONTROLLER = STAMP_CONVERSATION.where(
    conversation_table.c.id == sa.bindparam("conversation")
).returning(conversation_table.c.controlled_by)


def lease_owner() -> str:
    """Who is claiming: ``host:pid:thread``, at most 64 characters (for operators)."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{threading.get_ident() % 10**8}"[:64]


class SqlTurnStore:
    """Turn leases and the turn's first reads, inside the caller's transaction.

    Args:
        session: The SQLAlchemy session; the caller commits.
    """

    def __init__(self, session: Session) -> None:
        self.session = session

    def claim(self, contact_id: int, now: dt.datetime, seconds: float) -> int | None:
        """Take the contact's lease until ``now + seconds`` if it is free or expired.

        Returns:
            The new fencing token, or None when another turn holds a live lease.
        """
        if now.tzinfo is not None:  # stored as UTC (SQLite keeps no offset)
            now = now.astimezone(dt.UTC)
        dialect = self.session.get_bind().dialect.name
        return self.session.execute(
            _claim_statement(dialect),
            {
                "contact": contact_id,
                "owner": lease_owner(),
                "expires_at": now + dt.timedelta(seconds=seconds),
                "now": now,
            },
        ).scalar()

    def fence(self, contact_id: int, token: int) -> bool:
        """Release the lease if `token` still holds it; the first write of a turn's commit.

        The UPDATE also locks the lease row until the caller commits, so no
        other turn can claim the contact between this check and the commit.

        Returns:
            False when another turn has claimed the contact since (this one
            outlived its lease): the caller must write nothing.
        """
        result = self.session.execute(_RELEASE, {"contact": contact_id, "lease_token": token})
        return bool(result.rowcount)  # type: ignore[attr-defined]

    def release(self, contact_id: int, token: int) -> None:
        """Free the lease if `token` still holds it (a turn that had nothing to write)."""
        self.session.execute(_RELEASE, {"contact": contact_id, "lease_token": token})

    def view(self, contact_id: int, conversation_id: int | None) -> TurnView | None:
        """The contact and the conversation a turn speaks in (its latest when None).

        Returns:
            None when the contact has no such conversation (or none at all).
        """
        if conversation_id is None:
            row = self.session.execute(_LATEST_VIEW, {"contact": contact_id}).first()
        else:
            row = self.session.execute(_VIEW, {"conversation": conversation_id}).first()
        if row is None or row.contact_id != contact_id:
            return None
        return TurnView.of(row)

    def controller(self, conversation_id: int, stamp_message_id: int | None = None) -> str:
        """Who has the conversation now, read under a lock until the caller commits.

        Args:
            conversation_id: The conversation.
            stamp_message_id: An inbound message of it: its ``last_message_at``
                moves up to the message's arrival in the same statement (the
                caller then passes ``stamp=False`` to `SqlStore.finish_inbound`).
        """
        if stamp_message_id is None:
            return self.session.execute(_CONTROLLER, {"conversation": conversation_id}).scalar_one()
        return self.session.execute(
            _STAMP_AND_CONTROLLER,
            {"conversation": conversation_id, "finished_id": stamp_message_id},
        ).scalar_one()

    def lease_expiry(self, contact_id: int) -> dt.datetime | None:
        """When the contact's lease expires, or None when it is free."""
        return self.session.scalar(
            sa.select(_lease.expires_at).where(_lease.contact_id == contact_id)
        )
