"""Queued turns and REST sends: each message answered once, in order, per contact.

The stored inbound message is the durable record; a Celery task (tasks/) or the
sweeper only says "this contact may have work". `Dispatcher.drain` then, for
one contact:

1. takes the contact's row lock without waiting (another worker running a
   turn of the same contact already holds it: the task is retried shortly),
   picks the contact's oldest inbound message whose turn is ``pending`` and
   runs it with `services.turns.Turns.run` (execution, transcript and
   ``turn_status`` are committed together, so a turn runs once or not at all);
2. sends the contact's ``pending`` outbound messages oldest first, one at a
   time per conversation, each recorded before and after the REST call
   (`models.delivery.Delivery`), and repeats until nothing is pending.

Crash windows (a worker killed, its task redelivered by ``acks_late``):

- during a turn: the transaction rolls back, the message is still
  ``pending``, the redelivered task runs the turn: nothing is lost, nothing
  is sent twice (no outbound row existed);
- after the turn, before a send: the outbound row is ``pending`` and is sent
  by the redelivered task (or the sweeper);
- during the REST call (``Delivery.state == "sending"``, no ``MessageSid``):
  Twilio may or may not have accepted the message and there is no way to ask
  it without the SID, so the message is never sent again (at most once). After
  `Settings.inflight_seconds` it is marked ``unknown``; if Twilio did accept
  it, its first status callback carries the delivery's idempotency key in the
  URL and fills in the SID and the status. The residual risk is a reply that
  Twilio never received and that nobody resends: it is visible as ``unknown``
  in `failed_deliveries` and ``flask delivery failures``.

A read timeout of the REST call is treated the same way (Twilio may have
accepted it). Twilio 429 and 5xx answers and refused connections are retried
with exponential backoff and full jitter (`tenacity`) until
`Settings.send_deadline`; Twilio has no idempotency key for Messages, so a
5xx after Twilio stored the message could in principle duplicate it (Twilio
documents 5xx as not processed).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import requests
import sqlalchemy as sa
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from twilio.base.exceptions import TwilioRestException

from integrations.twilio import DEFAULT_SEND_TIMEOUT, TwilioSender
from models import Contact, Conversation, Delivery, Message
from models.entities import utcnow
from models.store import SqlStore, StoredInbound
from services.handover import bot_may_send
from services.optout import may_send
from services.outbound import contact_address
from services.turns import Incoming, Turns

log = logging.getLogger("parley.delivery")

#: WhatsApp's customer-service window: free-form messages only within 24 hours
#: of the contact's last message (Twilio error 63016 otherwise;
#: https://www.twilio.com/docs/whatsapp/key-concepts#the-24-hour-window-or-24-hour-session).
SERVICE_WINDOW = dt.timedelta(hours=24)

#: Why a message outside the window without a template was not sent.
OUTSIDE_WINDOW = "not sent: outside the 24-hour window"

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

#: Statuses Twilio posts to a status callback.
CALLBACK_STATUSES = frozenset(STATUS_RANK) - {"pending", "unknown"}

#: Outbound statuses that count as a failed delivery.
FAILED_STATUSES = ("failed", "undelivered", "unknown")


@dataclass(frozen=True)
class Settings:
    """How sends are made and retried.

    Attributes:
        public_base_url: ``PUBLIC_BASE_URL``; status callbacks go to its
            ``/twilio/status`` (none when unset).
        debounce_seconds: ``TURN_DEBOUNCE_MS`` in seconds; when not 0, the
            pending messages of a contact waiting at an ``llm`` step are
            answered as one turn (the webhook also delays the task by it).
        send_deadline: Seconds within which a send is retried
            (``TWILIO_SEND_DEADLINE``).
        retry_backoff: First backoff step in seconds; waits are random up to
            ``backoff * 2**n``, at most 8 s (``TWILIO_RETRY_BACKOFF``).
        inflight_seconds: How long a send under way blocks the next message of
            its conversation before it is taken as cut short.
    """

    public_base_url: str | None = None
    debounce_seconds: float = 0.0
    send_deadline: float = 30.0
    retry_backoff: float = 0.5
    inflight_seconds: float = 30.0 + DEFAULT_SEND_TIMEOUT + 15.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """The settings from the app's configuration."""
        deadline = float(config.get("TWILIO_SEND_DEADLINE") or 30)
        return cls(
            public_base_url=config.get("PUBLIC_BASE_URL") or None,
            debounce_seconds=float(config.get("TURN_DEBOUNCE_MS") or 0) / 1000,
            send_deadline=deadline,
            retry_backoff=float(config.get("TWILIO_RETRY_BACKOFF") or 0.5),
            inflight_seconds=deadline + DEFAULT_SEND_TIMEOUT + 15.0,
        )


class TurnNotFinished(Exception):
    """A turn could not be run or recorded (e.g. the database went away); retry later."""


@dataclass(frozen=True)
class _Claim:
    """A message claimed for sending: its delivery row is committed as ``sending``."""

    message_id: int
    key: str
    from_address: str
    to_address: str
    body: str
    template: dict[str, Any] | None
    media_urls: tuple[str, ...] = ()


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
        turns: Turns | None,
        sender: TwilioSender | None,
        settings: Settings,
    ) -> None:
        self.session = session
        self.turns = turns
        if turns is not None:
            turns.outbound_status = "pending"
        self.sender = sender
        self.settings = settings

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
        while True:
            step = self.run_next_turn(contact_id)
            if step == "busy":
                return False
            self.send_pending(contact_id)
            if step == "idle":
                return True

    def run_next_turn(self, contact_id: int) -> str:
        """Run the contact's oldest pending turn.

        Returns:
            ``ran``, ``idle`` (nothing pending) or ``busy`` (locked elsewhere).
        """
        store = SqlStore(self.session)
        try:
            contact = store.lock_contact(contact_id, nowait=True)
        except OperationalError as error:
            self.session.rollback()
            if getattr(error.orig, "sqlstate", None) == "55P03":  # lock_not_available
                return "busy"
            raise
        message = self.session.scalars(
            sa.select(Message)
            .where(
                Message.contact_id == contact_id,
                Message.direction == "inbound",
                Message.turn_status == "pending",
            )
            .order_by(Message.id)
            .limit(1)
        ).first()
        if message is None:
            self.session.commit()
            return "idle"
        conversation = self.session.get_one(Conversation, message.conversation_id)
        incoming = incoming_from_row(message, conversation, contact)
        if self.settings.debounce_seconds > 0:
            message, incoming = self._merge_burst(store, message, incoming)
        stored = StoredInbound(message.id, contact_id, conversation.id)
        message_id = message.id
        assert self.turns is not None, "a Dispatcher without turns only sends"
        self.turns.run(stored, incoming)  # commits, or stores the fallback and commits
        status = self.session.scalar(sa.select(Message.turn_status).where(Message.id == message_id))
        self.session.commit()
        if status == "pending":
            raise TurnNotFinished(f"the turn of message {message_id} was not recorded")
        return "ran"

    def _merge_burst(
        self, store: SqlStore, first: Message, incoming: Incoming
    ) -> tuple[Message, Incoming]:
        """With a debounce, the pending messages of a contact at an ``llm`` step, as one.

        The earlier ones are marked ``merged`` (left out of the LLM's history,
        since their text is in the turn's input) and the turn runs on the last
        one with every text, one per line.
        """
        assert self.turns is not None
        burst = self.session.scalars(
            sa.select(Message)
            .where(
                Message.conversation_id == first.conversation_id,
                Message.direction == "inbound",
                Message.turn_status == "pending",
            )
            .order_by(Message.id)
        ).all()
        execution = store.active_execution(first.contact_id)
        if len(burst) < 2 or execution is None or execution.status != "waiting":
            return first, incoming
        flow = self.turns.runner.flows.get(execution.flow_id)
        step = flow.steps.get(execution.current_step) if flow else None
        if getattr(step, "kind", None) != "llm":
            return first, incoming
        for earlier in burst[:-1]:
            earlier.turn_status = "merged"
        last = burst[-1]
        text = "\n".join(message.body for message in burst if message.body)
        log.info("turn.merged contact=%s messages=%d", first.contact_id, len(burst))
        conversation = self.session.get_one(Conversation, last.conversation_id)
        contact = self.session.get_one(Contact, last.contact_id)
        merged = incoming_from_row(last, conversation, contact)
        return last, dataclasses.replace(merged, body=text)

    def send_pending(self, contact_id: int) -> int:
        """Send the contact's pending outbound messages in order.

        Returns:
            How many REST calls were made.
        """
        calls = 0
        skipped: set[int] = set()
        while True:
            claim = self._claim_next(contact_id)
            if claim is None:
                return calls
            if isinstance(claim, _Skipped):
                if claim.message_id in skipped:  # attempted, yet still pending: leave it
                    log.error("delivery.stuck message=%s", claim.message_id)
                    return calls
                skipped.add(claim.message_id)
                continue
            assert isinstance(claim, _Claim)
            calls += 1
            self._send(claim)

    def send_messages(self, message_ids: Sequence[int]) -> int:
        """Send these stored outbound messages, in order, each at most once.

        For messages stored outside a queued turn (a timer, a resume after a
        payment); a message already attempted or with a ``MessageSid`` is skipped.

        Returns:
            How many REST calls were made.
        """
        calls = 0
        for message_id in message_ids:
            claim = self._claim(message_id, wait_for_others=False)
            if isinstance(claim, _Claim):
                calls += 1
                self._send(claim)
        return calls

    def _claim_next(self, contact_id: int) -> _Claim | _Skipped | None:
        """Record the contact's next send as under way, or None when there is none."""
        oldest = self.session.scalar(
            sa.select(Message.id)
            .where(
                Message.contact_id == contact_id,
                Message.direction == "outbound",
                Message.status == "pending",
            )
            .order_by(Message.id)
            .limit(1)
        )
        if oldest is None:
            self.session.commit()
            return None
        return self._claim(oldest, wait_for_others=True)

    def _claim(self, message_id: int, wait_for_others: bool) -> _Claim | _Skipped | None:
        """Write the message's delivery as ``sending`` and commit (the record before).

        Under the conversation's row lock, so that two workers never claim the
        same message or send two messages of a conversation at once.

        Returns:
            The claim; `_Skipped` when the message was not to be sent (recorded
            as failed, or already attempted); None when another send of the
            conversation is under way and `wait_for_others`.
        """
        conversation_id = self.session.scalar(
            sa.select(Message.conversation_id).where(Message.id == message_id)
        )
        conversation = self.session.scalars(
            sa.select(Conversation)
            .where(Conversation.id == conversation_id)
            .with_for_update(key_share=True)
        ).one()
        now = utcnow()
        if wait_for_others and self._in_flight(conversation.id, now):
            self.session.commit()  # its sender sends the rest when it is done
            return None
        message = self.session.get_one(Message, message_id, populate_existing=True)
        attempted = self.session.scalar(
            sa.select(Delivery.id).where(Delivery.message_id == message_id)
        )
        if attempted is not None or message.message_sid is not None:
            self.session.commit()
            return _Skipped(message.id)
        contact = self.session.get_one(Contact, message.contact_id)
        template = (message.media or {}).get("template")
        key = secrets.token_hex(16)
        delivery = Delivery(message_id=message.id, idempotency_key=key, attempted_at=now)
        self.session.add(delivery)
        skip, status = None, "failed"
        if not may_send(self.session, contact.id, message.body):
            skip, status = "canceled: the contact opted out", "canceled"
        elif not bot_may_send(self.session, conversation, message):
            skip, status = "canceled: an agent has the conversation", "canceled"
        elif self.sender is None:
            skip = "Twilio is not configured (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)"
        elif conversation.channel == "whatsapp" and not window_open(
            self.session, conversation.id, now
        ):
            if template:
                log.info("delivery.template message=%s", message.id)
            else:
                skip = OUTSIDE_WINDOW
        else:
            template = None  # inside the window: the free-form text
        if skip:
            delivery.state, delivery.error, delivery.finished_at = "failed", skip, now
            message.status = status
            self.session.commit()
            log.warning("delivery.not_sent message=%s reason=%s", message.id, skip)
            return _Skipped(message.id)
        claim = _Claim(
            message_id=message.id,
            key=key,
            from_address=conversation.address,
            to_address=contact_address(conversation.channel, contact.phone),
            body=message.body,
            template=template,
            media_urls=tuple((message.media or {}).get("urls") or ()),
        )
        self.session.commit()
        return claim

    def _in_flight(self, conversation_id: int, now: dt.datetime) -> bool:
        """Whether a send of the conversation is under way; marks cut-short ones ``unknown``."""
        rows = self.session.execute(
            sa.select(Delivery.id, Delivery.message_id, Delivery.attempted_at)
            .join(Message, Message.id == Delivery.message_id)
            .where(Message.conversation_id == conversation_id, Delivery.state == "sending")
        ).all()
        cutoff = now - dt.timedelta(seconds=self.settings.inflight_seconds)
        busy = False
        for delivery_id, message_id, attempted_at in rows:
            if _aware(attempted_at) > cutoff:
                busy = True
                continue
            log.error("delivery.cut_short message=%s: never resent (outcome unknown)", message_id)
            self.session.execute(
                sa.update(Delivery)
                .where(Delivery.id == delivery_id)
                .values(state="unknown", error="send cut short: outcome unknown", finished_at=now)
            )
            self.session.execute(
                sa.update(Message)
                .where(Message.id == message_id, Message.status == "pending")
                .values(status="unknown")
            )
        return busy

    def _send(self, claim: _Claim) -> None:
        """Make the REST call with retries, then record its outcome."""
        callback = None
        if self.settings.public_base_url:
            base = self.settings.public_base_url.rstrip("/")
            callback = f"{base}/twilio/status?delivery={claim.key}"
        attempts = 0
        sid = error = None
        state, status, error_code = "sent", "queued", None
        retrying = Retrying(
            retry=retry_if_exception(_retryable),
            wait=wait_random_exponential(multiplier=self.settings.retry_backoff, max=8),
            stop=stop_after_delay(self.settings.send_deadline) | stop_after_attempt(10),
            reraise=True,
        )
        assert self.sender is not None
        try:
            for attempt in retrying:
                with attempt:
                    attempts += 1
                    sid = self.sender.send(
                        claim.from_address,
                        claim.to_address,
                        claim.body,
                        callback,
                        content_sid=(claim.template or {}).get("content_sid"),
                        content_variables=(claim.template or {}).get("content_variables"),
                        media_urls=claim.media_urls,
                    )
        except TwilioRestException as exc:
            state, status, error_code = "failed", "failed", exc.code
            error = f"Twilio {exc.status} error {exc.code}: {exc.msg}"
        except requests.exceptions.ReadTimeout as exc:
            state, status, error = "unknown", "unknown", f"no answer in time: {exc}"
        except requests.exceptions.RequestException as exc:
            state, status, error = "failed", "failed", f"Twilio unreachable: {exc}"
        now = utcnow()
        if sid is not None:
            self.session.execute(
                sa.update(Message)
                .where(Message.id == claim.message_id, Message.message_sid.is_(None))
                .values(message_sid=sid)
            )
        if status == "unknown":
            self.session.execute(
                sa.update(Message)
                .where(Message.id == claim.message_id, Message.status == "pending")
                .values(status="unknown")
            )
        else:
            advance_status(self.session, claim.message_id, status, error_code)
        self.session.execute(
            sa.update(Delivery)
            .where(Delivery.idempotency_key == claim.key)
            .values(state=state, attempts=attempts, error=error, finished_at=now)
        )
        self.session.commit()
        if error:
            log.error(
                "delivery.failed message=%s attempts=%s %s", claim.message_id, attempts, error
            )


@dataclass(frozen=True)
class _Skipped:
    """A message that was not to be sent (recorded as failed, or already attempted)."""

    message_id: int


def _retryable(error: BaseException) -> bool:
    """Twilio 429 and 5xx answers and refused connections (nothing was stored)."""
    if isinstance(error, TwilioRestException):
        return error.status == 429 or error.status >= 500
    # ConnectTimeout is a ConnectionError; a ReadTimeout is not (Twilio may have it).
    return isinstance(error, requests.exceptions.ConnectionError)


def _aware(moment: dt.datetime) -> dt.datetime:
    """SQLite gives naive datetimes back; they were stored in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def advance_status(
    session: Session, message_id: int, status: str, error_code: int | None = None
) -> bool:
    """Move an outbound message to `status` unless it is already further along.

    One conditional UPDATE, so two callbacks racing cannot move it backwards.

    Returns:
        Whether the status changed.
    """
    return _advance(session, Message.id == message_id, status, error_code)


def _advance(session: Session, where: Any, status: str, error_code: int | None) -> bool:
    rank = sa.case(STATUS_RANK, value=Message.status, else_=0)
    values: dict[str, Any] = {"status": status}
    if error_code is not None:
        values["error_code"] = error_code
    result = session.execute(
        sa.update(Message).where(where, rank < STATUS_RANK[status]).values(**values)
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
    applied = _advance(session, Message.message_sid == message_sid, status, error_code)
    session.commit()
    return "applied" if applied else "stale"


def window_open(session: Session, conversation_id: int, now: dt.datetime | None = None) -> bool:
    """Whether the conversation's WhatsApp 24-hour customer-service window is open.

    The window opens with each message the contact sends and lasts 24 hours.
    """
    last = session.scalar(
        sa.select(sa.func.max(Message.created_at)).where(
            Message.conversation_id == conversation_id, Message.direction == "inbound"
        )
    )
    if last is None:
        return False
    return (now or utcnow()) - _aware(last) < SERVICE_WINDOW


def incoming_from_row(message: Message, conversation: Conversation, contact: Contact) -> Incoming:
    """Rebuild the `Incoming` of a stored inbound message (what a queued turn runs on)."""
    details = dict(message.media or {})
    return Incoming(
        phone=contact.phone,
        channel=conversation.channel,  # type: ignore[arg-type]
        address=conversation.address,
        body=message.body,
        message_sid=message.message_sid or f"local-{message.id}",
        name=contact.name,
        media=tuple(details.get("urls") or ()),
        media_types=tuple(details.get("types") or ()),
        button=details.get("button"),
        location=details.get("location"),
    )


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
