"""Queued turns: each message answered once, in order, per contact.

The stored inbound message is the durable record; a Celery task (tasks/) or the
sweeper only says "this contact may have work". `Dispatcher.drain` then, for
one contact:

1. claims the contact's turn lease without waiting (another worker running a
   turn of the same contact holds it: the task is retried shortly), picks
   the contact's oldest inbound message whose turn is ``pending`` and runs it
   with `conversation.turn.TurnService.run` under that lease (execution,
   transcript and ``turn_status`` are committed together, and only while the
   lease is still this worker's, so a turn runs once or not at all); the
   first reply's send is claimed in that same commit
   (`Outbox.claim_in_transaction`);
2. sends the contact's ``pending`` outbound messages (`delivery.outbox`),
   that claimed one first, and repeats until nothing is pending.

A worker killed during a turn wrote nothing: the message is still ``pending``
and, once its lease expires (``TURN_LEASE_SECONDS``), the redelivered task
(``acks_late``) or the sweeper runs the turn; nothing is lost, nothing is sent
twice (no outbound row existed). What
happens to a send cut short is in `delivery.outbox`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy import Row
from sqlalchemy.orm import Session

from conversation.turn import ContactGone, Incoming, TurnService
from delivery.outbox import Claim, Outbox, Sent, Settings
from integrations.twilio import TwilioSender
from models import Delivery, Message
from models.entities import as_utc, utcnow
from models.store import (
    SqlStore,
    StoredInbound,
    contact_table,
    conversation_table,
    message_table,
)
from models.turn_store import SqlTurnStore, TurnView

log = logging.getLogger("parley.delivery")

#: Rows are read on the tables (Core), with statements built once: this runs
#: for every message.
_message, _conversation, _contact = message_table.c, conversation_table.c, contact_table.c

_INBOUND_COLUMNS = (
    _message.id,
    _message.conversation_id,
    _message.contact_id,
    _message.body,
    _message.media,
    _message.message_sid,
    _conversation.channel,
    _conversation.address,
    _conversation.controlled_by,
    _contact.phone,
    _contact.name,
)
#: Inbound messages waiting for a turn, with what a turn needs of them.
_PENDING = (
    sa.select(*_INBOUND_COLUMNS)
    .join(conversation_table, _conversation.id == _message.conversation_id)
    .join(contact_table, _contact.id == _message.contact_id)
    .where(_message.direction == "inbound", _message.turn_status == "pending")
    .order_by(_message.id)
)
#: The contact's oldest one.
_NEXT = _PENDING.where(_message.contact_id == sa.bindparam("contact_id")).limit(1)
#: A conversation's, oldest first (a burst, with a debounce).
_BURST = _PENDING.where(_message.conversation_id == sa.bindparam("conversation_id"))


class TurnNotFinished(Exception):
    """A turn could not be run or recorded (e.g. the database went away); retry later."""


class Dispatcher:
    """Runs a contact's pending turns in order and sends their replies.

    Args:
        session: The SQLAlchemy session.
        turns: The turn service (its outbound rows are stored ``pending``), or
            None for a dispatcher that only sends (`send_messages`).
        sender: The Twilio REST sender, or None when Twilio is not configured
            (every send is then recorded as failed).
        settings: Retry and callback settings.
    """

    def __init__(
        self,
        session: Session,
        turns: TurnService | None,
        sender: TwilioSender | None,
        settings: Settings,
    ) -> None:
        self.session = session
        self.turns = turns
        self.sender = sender
        self.settings = settings
        self.outbox = Outbox(session, sender, settings)

    def drain(self, contact_id: int) -> bool:
        """Run every pending turn of the contact, oldest first, sending as it goes.

        Returns:
            True when nothing is left; False when another worker holds the
            contact's lock (it will answer what is pending; retry shortly to
            be sure).

        Raises:
            TurnNotFinished: a turn could not be recorded.
            sqlalchemy.exc.OperationalError: the database is unreachable.
        """
        first = True
        while True:
            step, claim = self._next_turn(contact_id)
            if step == "busy":
                return False
            # Sends left by an earlier run are looked for once; after that,
            # only a turn run here stores new ones for this loop to send.
            if step == "ran" or first:
                sent = self.outbox.send_pending(contact_id, first=claim)
                if not sent.inbound_waiting:
                    # Nothing came in meanwhile; what comes later has its own task.
                    return True
            if step == "idle" and not first:
                return True
            first = False  # idle at first, yet a message came in since: run it

    def run_next_turn(self, contact_id: int) -> str:
        """Run the contact's oldest pending turn; its replies are left ``pending``.

        Returns:
            ``ran``, ``idle`` (nothing pending) or ``busy`` (claimed elsewhere).

        Raises:
            TurnNotFinished: not even the turn's fallback could be recorded.
        """
        return self._next_turn(contact_id, claim_send=False)[0]

    def _next_turn(self, contact_id: int, claim_send: bool = True) -> tuple[str, Claim | None]:
        """`run_next_turn`, with the first send claimed in the turn's commit.

        Returns:
            What `run_next_turn` returns, and the claimed send (committed with
            the turn) for `Outbox.send_pending` to make first, if any.
        """
        turns = self.turns
        assert turns is not None, "a Dispatcher without turns only sends"
        try:
            token = turns.claim(contact_id, commit=False)
        except ContactGone:  # erased since its task was queued: nothing to do, ever
            log.info("turn.contact_gone contact=%s", contact_id)
            return "idle", None
        if token is None:
            return "busy", None
        try:
            message = self.session.execute(_NEXT, {"contact_id": contact_id}).first()
            body = message.body if message is not None else ""
            if message is not None and self.settings.debounce_seconds > 0:
                message, body = self._merge_burst(message)
        except Exception:
            self.session.rollback()
            raise
        if message is None:  # nothing to claim the contact for after all
            self.session.rollback()
            return "idle", None
        stored = StoredInbound(message.id, contact_id, message.conversation_id)
        incoming = dataclasses.replace(incoming_from_row(message, message), body=body)
        claim = partial(self.outbox.claim_in_transaction, contact_id, message.conversation_id)
        # The claim's transaction is still open: the turn's reads join it
        # (the contact and conversation were read with the message), and the
        # turn commits with its first send claimed, or stores the fallback.
        outcome = turns.run(
            stored,
            incoming,
            token=token,
            status="pending",
            view=TurnView.of(message),  # a row of _PENDING, read under the lease
            on_replies=claim if claim_send else None,
        )
        if not outcome.recorded:
            raise TurnNotFinished(f"the turn of message {stored.message_id} was not recorded")
        claimed = outcome.claimed
        return "ran", claimed if isinstance(claimed, Claim) else None

    def busy_for(self, contact_id: int) -> float:
        """Seconds until the lease another turn holds on the contact expires (0: free)."""
        try:
            expires_at = SqlTurnStore(self.session).lease_expiry(contact_id)
        finally:
            self.session.commit()
        if expires_at is None:
            return 0.0
        return max((as_utc(expires_at) - utcnow()).total_seconds(), 0.0)

    def _merge_burst(self, first: Row) -> tuple[Row, str]:
        """With a debounce, the pending messages of a contact whose step converses, as one.

        The earlier ones are marked ``merged`` (left out of the LLM's history,
        since their text is in the turn's input) and the turn runs on the last
        one with every text, one per line.

        Args:
            first: The oldest pending message (a row of ``_NEXT``).

        Returns:
            The message the turn runs on (a row of ``_BURST``) and its text:
            `first` and its body when there is no burst to merge.
        """
        assert self.turns is not None
        burst = self.session.execute(_BURST, {"conversation_id": first.conversation_id}).all()
        if len(burst) < 2:
            return first, first.body
        execution = SqlStore(self.session).active_execution(first.contact_id)
        if not self.turns.runner.merges_bursts(execution):
            return first, first.body
        self.session.execute(
            sa.update(message_table)
            .where(message_table.c.id.in_([earlier.id for earlier in burst[:-1]]))
            .values(turn_status="merged")
        )
        last = burst[-1]
        text = "\n".join(message.body for message in burst if message.body)
        log.info("turn.merged contact=%s messages=%d", first.contact_id, len(burst))
        return last, text

    def send_pending(self, contact_id: int) -> Sent:
        """Send the contact's pending outbound messages in order (`Outbox.send_pending`)."""
        return self.outbox.send_pending(contact_id)

    def send_messages(self, message_ids: Sequence[int]) -> int:
        """Send these stored outbound messages in order (`Outbox.send_messages`)."""
        return self.outbox.send_messages(message_ids)


def incoming_from_row(message: Row, contact: Any) -> Incoming:
    """Rebuild the `Incoming` of a stored inbound message (what a queued turn runs on).

    Args:
        message: A row of ``_PENDING`` (the message's ``id``, ``body``,
            ``media``, ``message_sid`` and its conversation's ``channel`` and
            ``address``).
        contact: Its contact (``phone``, ``name``).
    """
    details = dict(message.media or {})
    return Incoming(
        phone=contact.phone,
        channel=message.channel,
        address=message.address,
        body=message.body,
        message_sid=message.message_sid or f"local-{message.id}",
        name=contact.name,
        media=tuple(details.get("urls") or ()),
        media_types=tuple(details.get("types") or ()),
        button=details.get("button"),
        location=details.get("location"),
    )


def stalled_contacts(session: Session, grace_seconds: float) -> list[int]:
    """Contacts with work older than the grace period: a turn that never ran or
    finished, a reply never sent, or a send under way for too long."""
    cutoff = utcnow() - dt.timedelta(seconds=grace_seconds)
    pending = sa.select(Message.contact_id).where(
        Message.created_at < cutoff,
        sa.or_(
            sa.and_(Message.direction == "inbound", Message.turn_status == "pending"),
            sa.and_(Message.direction == "outbound", Message.status == "pending"),
        ),
    )
    sending = (
        sa.select(Message.contact_id)
        .join(Delivery, Delivery.message_id == Message.id)
        .where(Delivery.state == "sending", Delivery.attempted_at < cutoff)
    )
    ids = session.scalars(sa.union(pending, sending)).all()
    session.commit()
    return sorted(set(ids))
