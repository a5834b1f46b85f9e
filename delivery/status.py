"""Delivery statuses: what Twilio reports of each message it was given.

Twilio posts each outbound message's status to its status callback
(``POST /twilio/status``); `record_status` applies them in lifecycle order,
whatever order they arrive in. WhatsApp's 24-hour window is `delivery.window`.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Contact, Delivery, Message
from models.store import message_table

#: Twilio's message lifecycle, in order (docs: "Outbound Message Status in
#: Status Callbacks"); a status only replaces one of lower rank. ``pending``
#: (stored, not sent yet) and ``unknown`` (the send was cut short) are Parley's.
STATUS_RANK: dict[str, int] = {
    "pending": 0,
    "unknown": 0,
    "accepted": 1,
    "scheduled": 1,
    "queued": 2,
    "sending": 3,
    "sent": 4,
    "failed": 5,
    "undelivered": 5,
    "canceled": 5,
    "delivered": 6,
    "read": 7,
}

#: A message's rank in SQL (built once: a CASE of a dozen branches is costly
#: to build for every send).
STATUS_RANK_OF = sa.case(STATUS_RANK, value=message_table.c.status, else_=0)

#: Statuses Twilio posts to a status callback.
CALLBACK_STATUSES = frozenset(STATUS_RANK) - {"pending", "unknown"}

#: Outbound statuses that count as a failed delivery.
FAILED_STATUSES = ("failed", "undelivered", "unknown")


def _advance(session: Session, where: Any, status: str, error_code: int | None) -> bool:
    values: dict[str, Any] = {"status": status}
    if error_code is not None:
        values["error_code"] = error_code
    result = session.execute(
        sa.update(message_table).where(where, STATUS_RANK[status] > STATUS_RANK_OF).values(**values)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def record_status(
    session: Session,
    message_sid: str,
    status: str,
    error_code: int | None = None,
    idempotency_key: str | None = None,
) -> str:
    """Apply one Twilio status callback.

    Args:
        session: The session; committed here.
        message_sid: ``MessageSid``.
        status: ``MessageStatus``, one of `CALLBACK_STATUSES`.
        error_code: ``ErrorCode``, for ``failed`` and ``undelivered``.
        idempotency_key: The ``delivery`` query parameter of the callback URL:
            names the message when its SID was never recorded (a worker died
            during the REST call).

    Returns:
        ``applied``, ``stale`` (the message is already further along) or
        ``unknown`` (no such message).

    Raises:
        ValueError: `status` is not a Twilio message status.
    """
    if status not in CALLBACK_STATUSES:
        raise ValueError(f"MessageStatus is not a message status: {status!r}")
    known = session.scalar(sa.select(Message.id).where(Message.message_sid == message_sid))
    if known is None and idempotency_key:
        delivery = session.scalars(
            sa.select(Delivery).where(Delivery.idempotency_key == idempotency_key)
        ).first()
        if delivery is not None:
            session.execute(
                sa.update(Message)
                .where(Message.id == delivery.message_id, Message.message_sid.is_(None))
                .values(message_sid=message_sid)
            )
            if delivery.state in ("sending", "unknown"):
                delivery.state, delivery.error = "sent", None
            known = session.scalar(sa.select(Message.id).where(Message.message_sid == message_sid))
    if known is None:
        session.commit()
        return "unknown"
    applied = _advance(session, message_table.c.message_sid == message_sid, status, error_code)
    session.commit()
    return "applied" if applied else "stale"


def failed_deliveries(session: Session) -> list[tuple[int, str, int]]:
    """Contacts with failed outbound messages: ``(contact_id, phone, count)``, most first."""
    rows = session.execute(
        sa.select(Contact.id, Contact.phone, sa.func.count(Message.id))
        .join(Message, Message.contact_id == Contact.id)
        .where(Message.direction == "outbound", Message.status.in_(FAILED_STATUSES))
        .group_by(Contact.id, Contact.phone)
        .order_by(sa.func.count(Message.id).desc(), Contact.id)
    ).all()
    return [(contact_id, phone, count) for contact_id, phone, count in rows]
