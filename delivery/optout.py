"""Who opted out of all messages (``STOP``…), checked by every send path.

A contact who opted out gets nothing until they opt in again: no TwiML reply
(the opt-out responder answers with silence), no REST send
(`delivery.outbound.send_stored` cancels it), no timer's message.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models.entities import Message, utcnow
from models.runtime import OptOut

log = logging.getLogger("parley.optout")

_opt_out: sa.Table = OptOut.__table__  # type: ignore[assignment]
#: One Core statement, built once: this runs before every turn (the opt-out
#: responder), where an ORM ``Session.get`` cost several times as much.
_OPTED_OUT = sa.select(_opt_out.c.contact_id).where(
    _opt_out.c.contact_id == sa.bindparam("contact_id")
)


def is_opted_out(session: Session, contact_id: int) -> bool:
    """Whether the contact has opted out and not opted in since."""
    return session.execute(_OPTED_OUT, {"contact_id": contact_id}).first() is not None


def may_send(session: Session, contact_id: int, body: str) -> bool:
    """Whether a message may go to the contact: not opted out, or it is the confirmation."""
    opt_out = session.get(OptOut, contact_id)
    return allows(opt_out is not None, opt_out.confirmation if opt_out else None, body)


def allows(opted_out: bool, confirmation: str | None, body: str) -> bool:
    """`may_send` given the contact's opt-out as read (`confirmation`: the text still allowed)."""
    return not opted_out or (confirmation is not None and body == confirmation)


def record_opt_out(
    session: Session, contact_id: int, keyword: str, channel: str, confirmation: str | None
) -> None:
    """Mark the contact opted out (in the caller's transaction).

    Args:
        session: The turn's session.
        contact_id: The contact.
        keyword: The keyword they sent.
        channel: The channel they sent it on.
        confirmation: The text answering it, which may still be sent (None: none).
    """
    opt_out = session.get(OptOut, contact_id)
    if opt_out is None:
        opt_out = OptOut(contact_id=contact_id, keyword=keyword, channel=channel)
        session.add(opt_out)
    opt_out.opted_out_at = utcnow()
    opt_out.confirmation = confirmation
    session.flush()


def record_opt_in(session: Session, contact_id: int) -> None:
    """Mark the contact opted in again (in the caller's transaction)."""
    session.execute(sa.delete(OptOut).where(OptOut.contact_id == contact_id))


def cancel_opted_out(session: Session, message_ids: Sequence[int]) -> list[int]:
    """Mark ``canceled`` the stored outbound messages that may not go out; commit.

    Returns:
        The ids that may be sent, in order.
    """
    allowed = []
    for message_id in message_ids:
        message = session.get(Message, message_id)
        if message is not None and not may_send(session, message.contact_id, message.body):
            log.info("outbound.opted_out message=%s", message.id)
            message.status = "canceled"
        else:
            allowed.append(message_id)
    session.commit()
    return allowed
