"""REST sends of stored outbound messages, each recorded before and after the call.

`Outbox.send_pending` sends a contact's ``pending`` outbound messages oldest
first, one at a time per conversation (under the conversation's row lock),
each recorded before the REST call (`models.delivery.Delivery`, state
``sending``, committed) and after it. `Outbox.send_messages` sends given
messages (a timer's, a resume after a payment).

Crash windows (a worker killed, its task redelivered by ``acks_late``):

- before a send: the outbound row is ``pending`` and is sent by the
  redelivered task (or the sweeper);
- during the REST call (``Delivery.state == "sending"``, no ``MessageSid``):
  Twilio may or may not have accepted the message and there is no way to ask
  it without the SID, so the message is never sent again (at most once). After
  `Settings.inflight_seconds` it is marked ``unknown``; if Twilio did accept
  it, its first status callback carries the delivery's idempotency key in the
  URL and fills in the SID and the status. The residual risk is a reply that
  Twilio never received and that nobody resends: it is visible as ``unknown``
  in `delivery.status.failed_deliveries` and ``flask delivery failures``.

A read timeout of the REST call is treated the same way (Twilio may have
accepted it). Twilio 429 and 5xx answers and refused connections are retried
with exponential backoff and full jitter (`tenacity`) until
`Settings.send_deadline`; Twilio has no idempotency key for Messages, so a
5xx after Twilio stored the message could in principle duplicate it (Twilio
documents 5xx as not processed).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
import sqlalchemy as sa
from sqlalchemy import Row
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from tenacity import (
    Retrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)
from twilio.base.exceptions import TwilioRestException

from config import Settings as AppSettings
from delivery.optout import allows
from delivery.outbound import contact_address
from delivery.status import STATUS_RANK, STATUS_RANK_OF
from delivery.window import OUTSIDE_WINDOW, within_window
from handover.control import bot_may_send
from integrations.twilio import DEFAULT_SEND_TIMEOUT, TwilioSender
from models import Delivery, Message
from models.entities import as_utc, utcnow
from models.runtime import OptOut
from models.store import contact_table, conversation_table, message_table

log = logging.getLogger("parley.delivery")

_T = TypeVar("_T")

#: Seconds within which a send's outcome is written again after a database
#: error (the message went out: its record must not be lost).
RECORD_DEADLINE = 15.0

#: Rows are read and written on the tables (Core): this runs for every message.
delivery_table: sa.Table = Delivery.__table__  # type: ignore[assignment]
opt_out_table: sa.Table = OptOut.__table__  # type: ignore[assignment]
_message, _conversation, _contact = message_table.c, conversation_table.c, contact_table.c
_inbound = message_table.alias("inbound")

#: A send's outcome, in one UPDATE: the status unless the message is already
#: further along (a status callback may have been faster), its error code with
#: it, and the SID unless one is there.
_moves = sa.bindparam("rank", type_=sa.Integer) > STATUS_RANK_OF
_RECORD_OUTCOME = (
    sa.update(message_table)
    .where(_message.id == sa.bindparam("message_id"))
    .values(
        status=sa.case((_moves, sa.bindparam("status", type_=sa.String)), else_=_message.status),
        error_code=sa.case(
            (
                sa.and_(_moves, sa.bindparam("error_code", type_=sa.Integer).is_not(None)),
                sa.bindparam("error_code", type_=sa.Integer),
            ),
            else_=_message.error_code,
        ),
        message_sid=sa.func.coalesce(_message.message_sid, sa.bindparam("sid", type_=sa.String)),
    )
)
#: A delivery row: written before the REST call, finished after it.
_INSERT_DELIVERY = sa.insert(delivery_table)
_FINISH_DELIVERY = sa.update(delivery_table).where(
    delivery_table.c.idempotency_key == sa.bindparam("key")
)
#: A send cut short (no answer in time): ``unknown`` unless already further along.
_RECORD_UNKNOWN = (
    sa.update(message_table)
    .where(_message.id == sa.bindparam("message_id"), _message.status == "pending")
    .values(status="unknown")
)

#: The contact's outbound messages waiting to be sent.
_PENDING_SEND = (
    _message.contact_id == sa.bindparam("contact_id"),
    _message.direction == "outbound",
    _message.status == "pending",
)
_oldest_pending_send = (
    sa.select(_message.id, _message.conversation_id)
    .where(*_PENDING_SEND)
    .order_by(_message.id)
    .limit(1)
    .subquery()
)
#: The contact's next message to send (if any), and whether an inbound
#: message of the contact waits for its turn.
_NEXT_WORK = sa.select(
    sa.select(_oldest_pending_send.c.id).scalar_subquery().label("message_id"),
    sa.select(_oldest_pending_send.c.conversation_id).scalar_subquery().label("conversation_id"),
    sa.select(_inbound.c.id)
    .where(
        _inbound.c.contact_id == sa.bindparam("contact_id"),
        _inbound.c.direction == "inbound",
        _inbound.c.turn_status == "pending",
    )
    .exists()
    .label("inbound_waiting"),
)

#: The conversation's row lock, and whether a send of it is under way.
_LOCK_CONVERSATION = (
    sa.select(
        _conversation.id,
        _conversation.channel,
        _conversation.address,
        _conversation.controlled_by,
        sa.select(delivery_table.c.id)
        .join(message_table, _message.id == delivery_table.c.message_id)
        .where(_message.conversation_id == _conversation.id, delivery_table.c.state == "sending")
        .exists()
        .label("sending"),
    )
    .where(_conversation.id == sa.bindparam("conversation_id"))
    .with_for_update(of=conversation_table, key_share=True)
)

#: An outbound message with everything that decides whether it goes out.
_SEND_BASE = (
    sa.select(
        _message.id,
        _message.author,
        _message.body,
        _message.media,
        _message.message_sid,
        _contact.phone,
        opt_out_table.c.contact_id.label("opted_out"),
        opt_out_table.c.confirmation,
        sa.select(delivery_table.c.id)
        .where(delivery_table.c.message_id == _message.id)
        .exists()
        .label("attempted"),
        sa.select(sa.func.max(_inbound.c.created_at))
        .where(
            _inbound.c.conversation_id == _message.conversation_id,
            _inbound.c.direction == "inbound",
        )
        .scalar_subquery()
        .label("last_inbound_at"),
    )
    .join(contact_table, _contact.id == _message.contact_id)
    .outerjoin(opt_out_table, opt_out_table.c.contact_id == _message.contact_id)
)
_TO_SEND = _SEND_BASE.where(_message.id == sa.bindparam("message_id"))
#: The same for the contact's oldest pending outbound message, with its conversation.
_OLDEST_TO_SEND = (
    _SEND_BASE.add_columns(_message.conversation_id)
    .where(*_PENDING_SEND)
    .order_by(_message.id)
    .limit(1)
)


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
    def from_settings(cls, settings: AppSettings) -> Settings:
        """The delivery part of the app's settings."""
        deadline = settings.twilio_send_deadline
        return cls(
            public_base_url=settings.public_base_url,
            debounce_seconds=settings.turn_debounce_ms / 1000,
            send_deadline=deadline,
            retry_backoff=settings.twilio_retry_backoff,
            inflight_seconds=deadline + DEFAULT_SEND_TIMEOUT + 15.0,
        )


@dataclass(frozen=True)
class Sent:
    """What `Outbox.send_pending` did.

    Attributes:
        calls: REST calls made.
        inbound_waiting: An inbound message of the contact was waiting for its
            turn at the last look (stored while the sends went out).
    """

    calls: int
    inbound_waiting: bool


@dataclass(frozen=True)
class Claim:
    """A message claimed for sending: its delivery row is committed as ``sending``."""

    message_id: int
    key: str
    from_address: str
    to_address: str
    body: str
    template: dict[str, Any] | None
    media_urls: tuple[str, ...] = ()


class Outbox:
    """Sends stored outbound messages through the Twilio REST API, each at most once.

    Args:
        session: The SQLAlchemy session; committed before and after each call.
        sender: The Twilio REST sender, or None when Twilio is not configured
            (every send is then recorded as failed).
        settings: Retry and callback settings.
    """

    def __init__(self, session: Session, sender: TwilioSender | None, settings: Settings) -> None:
        self.session = session
        self.sender = sender
        self.settings = settings

    def send_pending(self, contact_id: int, first: Claim | None = None) -> Sent:
        """Send the contact's pending outbound messages in order.

        Each send's outcome is committed with the look for what comes next (a
        transaction less per message).

        Args:
            contact_id: The contact.
            first: A send already claimed and committed (`claim_in_transaction`):
                it goes out first.

        Returns:
            How many REST calls were made, and whether an inbound message of
            the contact was waiting for its turn at the last look.
        """
        calls = 0
        skipped: set[int] = set()
        outcome: _Outcome | None = None
        if first is not None:
            calls += 1
            outcome = self._send(first)  # recorded by the first _claim_next
        while True:
            claim, inbound_waiting = self._claim_next(contact_id, outcome)
            outcome = None
            if claim is None:
                return Sent(calls, inbound_waiting)
            if isinstance(claim, _Skipped):
                if claim.message_id in skipped:  # attempted, yet still pending: leave it
                    log.error("delivery.stuck message=%s", claim.message_id)
                    return Sent(calls, inbound_waiting)
                skipped.add(claim.message_id)
                continue
            assert isinstance(claim, Claim)
            calls += 1
            outcome = self._send(claim)  # recorded by the next _claim_next

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
            if isinstance(claim, Claim):
                calls += 1
                outcome = self._send(claim)
                self._durably(lambda outcome=outcome: self._record(outcome))
        return calls

    def _claim_next(
        self, contact_id: int, after: _Outcome | None = None
    ) -> tuple[Claim | _Skipped | None, bool]:
        """Record the contact's next send as under way (None when there is none).

        Args:
            contact_id: The contact.
            after: The outcome of the send just made, committed with the look
                for the next one.

        Returns:
            The claim, and whether an inbound message of the contact waits
            for its turn.
        """

        def look() -> Row:
            if after is not None:
                self._record(after)
            return self.session.execute(_NEXT_WORK, {"contact_id": contact_id}).one()

        if after is None:
            # Nothing to write durably: the look joins the claim's transaction
            # (one round trip, and one pool checkout, less per message).
            try:
                work = look()
            except Exception:
                self.session.rollback()
                raise
            if work.message_id is None:
                self.session.commit()
        else:
            work = self._durably(look)
        if work.message_id is None:
            return None, work.inbound_waiting
        claim = self._claim(
            work.message_id, wait_for_others=True, conversation_id=work.conversation_id
        )
        return claim, work.inbound_waiting

    def claim_in_transaction(self, contact_id: int, conversation_id: int) -> Claim | None:
        """Claim the contact's next send inside the caller's open transaction.

        For a queued turn's commit (`delivery.dispatcher`): the first reply's
        delivery row is written with the turn, one transaction less per
        message. Nothing is committed here; if the caller's transaction rolls
        back, so does the claim.

        Args:
            contact_id: The contact.
            conversation_id: The conversation the turn spoke in: its row lock
                is taken first, and the contact's oldest pending message is
                claimed only if it is of this conversation.

        Returns:
            The claim to send once the caller has committed; None when there
            is nothing to claim here (nothing pending, another send of the
            conversation under way, an older message of another
            conversation first, or the message was not to be sent: recorded
            as such in the same transaction). `send_pending` looks again
            after it.
        """
        conversation = self.session.execute(
            _LOCK_CONVERSATION, {"conversation_id": conversation_id}
        ).one()
        now = utcnow()
        if conversation.sending and self._in_flight(conversation.id, now):
            return None
        message = self.session.execute(_OLDEST_TO_SEND, {"contact_id": contact_id}).first()
        if message is None or message.conversation_id != conversation.id:
            return None
        claim = self._claim_message(conversation, message, now)
        return claim if isinstance(claim, Claim) else None

    def _claim(
        self, message_id: int, wait_for_others: bool, conversation_id: int | None = None
    ) -> Claim | _Skipped | None:
        """Write the message's delivery as ``sending`` and commit (the record before).

        See `_claim_rows`; this commits what it wrote (or the look, when
        nothing was).
        """
        try:
            claim = self._claim_rows(message_id, wait_for_others, conversation_id)
        except Exception:
            self.session.rollback()
            raise
        self.session.commit()
        return claim

    def _claim_rows(
        self, message_id: int, wait_for_others: bool, conversation_id: int | None = None
    ) -> Claim | _Skipped | None:
        """Write the message's delivery as ``sending``, in the caller's transaction.

        Under the conversation's row lock, so that two workers never claim the
        same message or send two messages of a conversation at once.

        Args:
            message_id: The outbound message.
            wait_for_others: Give up (None) while another send of the
                conversation is under way.
            conversation_id: The message's conversation, when the caller knows it.

        Returns:
            The claim; `_Skipped` when the message was not to be sent (recorded
            as failed, or already attempted); None when another send of the
            conversation is under way and `wait_for_others`.
        """
        if conversation_id is None:
            conversation_id = self.session.scalar(
                sa.select(message_table.c.conversation_id).where(message_table.c.id == message_id)
            )
        conversation = self.session.execute(
            _LOCK_CONVERSATION, {"conversation_id": conversation_id}
        ).one()
        now = utcnow()
        if conversation.sending and wait_for_others and self._in_flight(conversation.id, now):
            return None  # its sender sends the rest when it is done
        # Read under the lock: whether another worker claimed it meanwhile.
        message = self.session.execute(_TO_SEND, {"message_id": message_id}).one()
        return self._claim_message(conversation, message, now)

    def _claim_message(self, conversation: Row, message: Row, now: dt.datetime) -> Claim | _Skipped:
        """Write the delivery of `message` (a row of ``_TO_SEND``) under the lock of
        `conversation` (a row of ``_LOCK_CONVERSATION``), or why it does not go out."""
        if message.attempted or message.message_sid is not None:
            return _Skipped(message.id)
        template = (message.media or {}).get("template")
        key = secrets.token_hex(16)
        skip, status = None, "failed"
        if not allows(message.opted_out is not None, message.confirmation, message.body):
            skip, status = "canceled: the contact opted out", "canceled"
        elif not bot_may_send(
            self.session, conversation.id, conversation.controlled_by, message.author
        ):
            skip, status = "canceled: an agent has the conversation", "canceled"
        elif self.sender is None:
            skip = "Twilio is not configured (TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN)"
        elif conversation.channel == "whatsapp" and not within_window(message.last_inbound_at, now):
            if template:
                log.info("delivery.template message=%s", message.id)
            else:
                skip = OUTSIDE_WINDOW
        else:
            template = None  # inside the window: the free-form text
        delivery = {"message_id": message.id, "idempotency_key": key, "attempted_at": now}
        if skip:
            self.session.execute(
                sa.insert(delivery_table).values(
                    **delivery, state="failed", error=skip, finished_at=now
                )
            )
            self.session.execute(
                sa.update(message_table)
                .where(message_table.c.id == message.id)
                .values(status=status)
            )
            log.warning("delivery.not_sent message=%s reason=%s", message.id, skip)
            return _Skipped(message.id)
        self.session.execute(_INSERT_DELIVERY, {**delivery, "state": "sending"})
        return Claim(
            message_id=message.id,
            key=key,
            from_address=conversation.address,
            to_address=contact_address(conversation.channel, message.phone),
            body=message.body,
            template=template,
            media_urls=tuple((message.media or {}).get("urls") or ()),
        )

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
            if as_utc(attempted_at) > cutoff:
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

    def _send(self, claim: Claim) -> _Outcome:
        """Make the REST call with retries; what happened (recorded by `_record`)."""
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
        if error:
            log.error(
                "delivery.failed message=%s attempts=%s %s", claim.message_id, attempts, error
            )
        return _Outcome(claim, state, status, sid, error, error_code, attempts, utcnow())

    def _record(self, outcome: _Outcome) -> None:
        """Write a send's outcome (the record after); the caller commits."""
        message_id = outcome.claim.message_id
        if outcome.status == "unknown":
            self.session.execute(_RECORD_UNKNOWN, {"message_id": message_id})
        else:
            self.session.execute(
                _RECORD_OUTCOME,
                {
                    "message_id": message_id,
                    "status": outcome.status,
                    "rank": STATUS_RANK[outcome.status],
                    "error_code": outcome.error_code,
                    "sid": outcome.sid,
                },
            )
        self.session.execute(
            _FINISH_DELIVERY,
            {
                "key": outcome.claim.key,
                "state": outcome.state,
                "attempts": outcome.attempts,
                "error": outcome.error,
                "finished_at": outcome.finished_at,
            },
        )

    def _durably(self, write: Callable[[], _T]) -> _T:
        """Run `write` and commit, again on a database error, for up to `RECORD_DEADLINE`.

        For what must not be lost once a message went out: its outcome. Left
        unrecorded, the delivery stays ``sending`` and holds back the rest of
        the conversation until `Settings.inflight_seconds` pass.
        """
        retrying = Retrying(
            retry=retry_if_exception_type(OperationalError),
            wait=wait_random_exponential(multiplier=0.1, max=2),
            stop=stop_after_delay(RECORD_DEADLINE),
            before_sleep=lambda _state: self.session.rollback(),
            reraise=True,
        )
        for attempt in retrying:
            with attempt:
                result = write()
                self.session.commit()
        return result


@dataclass(frozen=True)
class _Outcome:
    """What a REST send came to, to be recorded."""

    claim: Claim
    state: str
    status: str
    sid: str | None
    error: str | None
    error_code: int | None
    attempts: int
    finished_at: dt.datetime


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
