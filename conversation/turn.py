"""A turn, step by step (DESIGN.md): store, serialise, run, commit, reply.

This is the one code path for every inbound message, whether it came through
the Twilio webhook or `flask chat`: the inbound message is stored first (a
duplicate ``MessageSid`` stops there), the contact's turns are serialised by a
row lock, the runner advances the execution, and the execution and the
transcript are committed together. Any failure after the message is stored
still answers the contact with the flow's fallback text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from engine.flow import DEFAULT_FALLBACK
from engine.ports import Channel, Contact, Entitlements, ExecutionState, InboundMessage, Reply
from engine.runner import Runner, TurnResult
from handover.control import announce_message
from handover.routing import flow_handover
from models.entities import Contact as ContactRow
from models.entities import Message
from models.store import OutboundPart, SqlStore, StoredInbound

log = logging.getLogger("parley.turns")


@dataclass(frozen=True)
class Preface:
    """A responder's texts that go before the flow's replies; the flow then runs (a welcome)."""

    texts: list[str]


#: Answers a message before the flow runs: ``responder(contact, text)`` returns
#: a list of texts (the answer; the flow does not run, ``[]`` answers with
#: silence), a `Preface` (texts sent first, then the later responders and the
#: flow run) or None (let the others and the flow run). Opt-out, reset code,
#: billing keyword, after-hours, welcome: conversation/responders.py.
Responder = Callable[[Contact, str], "list[str] | Preface | None"]


@dataclass(frozen=True)
class Incoming:
    """An inbound message from any channel, before it is stored.

    Attributes:
        phone: The contact's E.164 number.
        channel: ``whatsapp`` or ``sms``.
        address: Our side of the conversation (Twilio's ``To``).
        body: The text as typed.
        message_sid: Twilio's ``MessageSid``, or a local unique id.
        name: WhatsApp ``ProfileName``, if any.
        media: Media URLs.
        media_types: Their content types, same order.
        button: The WhatsApp button tapped (``{"payload", "text"}``), or None.
        location: The shared location (``{"latitude", "longitude", ...}``), or None.
    """

    phone: str
    channel: Channel
    address: str
    body: str
    message_sid: str
    name: str | None = None
    media: tuple[str, ...] = ()
    media_types: tuple[str, ...] = ()
    button: dict[str, str] | None = None
    location: dict[str, Any] | None = None


@dataclass
class TurnOutcome:
    """What a turn answered.

    Attributes:
        replies: The message bodies to send, in order (each within one Twilio
            message's limit).
        duplicate: The ``MessageSid`` was already stored: nothing was done.
        message_id: The stored inbound message, when not a duplicate.
        error: Why the turn answered with the fallback, if it did.
        result: The runner's result, when the runner ran.
        media: The media URL sent with each reply (same order), or None each.
        recorded: False when not even the fallback could be stored: the
            inbound message's turn is still ``pending`` (a queued turn is
            retried later).
    """

    replies: list[str] = field(default_factory=list)
    duplicate: bool = False
    message_id: int | None = None
    error: str | None = None
    result: TurnResult | None = None
    media: list[str | None] = field(default_factory=list)
    recorded: bool = True


class Turns:
    """Runs turns against the database.

    Args:
        session: The SQLAlchemy session (Flask-SQLAlchemy's scoped session).
        runner: The flow runner.
        split: Splits one reply into message bodies Twilio accepts.
        entitlements: Who may pass paywalls (everyone when None).
        responders: Checked in order before the flow (step 4 of a turn); the
            first that answers (returns a list of texts) ends the turn.
    """

    def __init__(
        self,
        session: Session,
        runner: Runner,
        split: Callable[[str], list[str]],
        entitlements: Entitlements | None = None,
        responders: Sequence[Responder] = (),
    ) -> None:
        self.session = session
        self.runner = runner
        self.split = split
        self.entitlements = entitlements
        self.responders = tuple(responders)
        #: Status of the outbound rows a turn stores: ``queued`` when they go
        #: out in the webhook's TwiML, ``pending`` when a worker sends them
        #: (delivery/dispatcher.py).
        self.outbound_status = "queued"
        #: Where a ``handover`` step goes when its agent is unknown or none is available.
        self.handover_queue = "support"
        #: The note for a contact handed over outside the agents' hours, or None.
        self.handover_note: Callable[[], str | None] | None = None

    def handle(self, incoming: Incoming, flow_id: str | None = None) -> TurnOutcome:
        """Store an inbound message, then run its turn.

        Args:
            incoming: The message.
            flow_id: Run this flow rather than follow triggers (``flask chat``).

        Raises:
            sqlalchemy.exc.OperationalError: the database is unreachable while
                storing the message (nothing was stored; the caller answers 503).
        """
        stored = self.store(incoming)
        if stored is None:
            log.info("turn.duplicate message_sid=%s", incoming.message_sid)
            return TurnOutcome(duplicate=True)
        return self.run(stored, incoming, flow_id)

    def store(self, incoming: Incoming) -> StoredInbound | None:
        """Step 2: store the inbound message in its own transaction (None: duplicate)."""
        return store_incoming(self.session, incoming)

    def run(
        self,
        stored: StoredInbound,
        incoming: Incoming,
        flow_id: str | None = None,
        *,
        locked: ContactRow | None = None,
        controlled_by: str | None = None,
    ) -> TurnOutcome:
        """Steps 3 to 6: lock the contact, run the flow, commit execution and transcript.

        Args:
            stored: The stored inbound message.
            incoming: Its content.
            flow_id: Run this flow rather than follow triggers.
            locked: The contact's row, when the caller already holds its lock
                in this transaction (a queued turn: `delivery.dispatcher`).
            controlled_by: The conversation's ``controlled_by`` as read under
                that lock (read here when None).
        """
        store = SqlStore(self.session)
        try:
            contact_row = locked if locked is not None else store.lock_contact(stored.contact_id)
            if controlled_by is None:
                controlled_by = store.controller(stored.conversation_id)
            if controlled_by != "bot":
                store.finish_inbound(stored.message_id, "skipped", None, None)
                announce_message(self.session, self.session.get_one(Message, stored.message_id))
                self.session.commit()
                return TurnOutcome(message_id=stored.message_id)
            contact = Contact(
                id=contact_row.id,
                phone=contact_row.phone,
                name=contact_row.name,
                channel=incoming.channel,
            )
            inbound = InboundMessage(
                text=incoming.body,
                channel=incoming.channel,
                message_sid=incoming.message_sid,
                media=incoming.media,
                media_types=incoming.media_types,
                button=incoming.button,
                location=incoming.location,
            )
            prefaces: list[str] = []
            for responder in self.responders:
                answer = responder(contact, incoming.body)
                if isinstance(answer, Preface):
                    prefaces.extend(answer.texts)
                elif answer is not None:
                    return self._answered(store, stored, prefaces + answer)
            execution = store.active_execution(contact.id)
            result = self.runner.run_turn(
                execution,
                inbound,
                contact,
                history=lambda limit: store.history(contact.id, limit, stored.message_id),
                flow_id=flow_id,
                entitlements=self.entitlements,
            )
            result.replies[:0] = [Reply(text=text, author="system") for text in prefaces]
            if execution is not None and execution.id and result.execution is not execution:
                store.end_execution(execution.id)
            execution_id = None
            flow_id = None
            error = result.error.reason if result.error else None
            if result.execution is not None:
                execution_id = store.save_execution(contact.id, result.execution, error)
                flow_id = result.execution.flow_id
            parts = self._parts(result)
            store.store_outbound(
                stored,
                parts,
                execution_id=execution_id,
                flow_id=flow_id,
                status=self.outbound_status,
            )
            if result.execution is not None:  # a `handover` step: the bot goes silent
                event = flow_handover(
                    self.session, stored.conversation_id, result.execution, self.handover_queue
                )
                note = self.handover_note() if event is not None and self.handover_note else None
                if note:  # outside the agents' hours: say when someone will answer
                    extra = [OutboundPart(body=note, author="system")]
                    store.store_outbound(
                        stored,
                        extra,
                        execution_id=execution_id,
                        flow_id=flow_id,
                        status=self.outbound_status,
                    )
                    parts = [*parts, *extra]
            store.finish_inbound(
                stored.message_id, "failed" if error else "done", execution_id, flow_id
            )
            self.session.commit()
        except Exception as exc:
            self.session.rollback()
            log.exception("turn.failed contact=%s message=%s", stored.contact_id, stored.message_id)
            return self._answer_failure(stored, exc)
        return TurnOutcome(
            replies=[part.body for part in parts],
            message_id=stored.message_id,
            error=error,
            result=result,
            media=[part.media_url for part in parts],
        )

    def resume(self, contact_id: int) -> list[int]:
        """Run a turn with no inbound message for a contact waiting at a paywall.

        Used after a payment: the execution carries on where it stopped. The
        replies are stored (status ``queued``) in the contact's latest
        conversation, for the caller to send.

        Returns:
            The stored outbound message ids, in order (empty when the contact
            has no execution waiting at a paywall, or no conversation).
        """
        store = SqlStore(self.session)
        try:
            contact_row = store.lock_contact(contact_id)
            execution = store.active_execution(contact_id)
            conversation = store.latest_conversation(contact_id)
            if execution is None or conversation is None or not self._at_paywall(execution):
                self.session.commit()
                return []
            contact = Contact(
                id=contact_row.id,
                phone=contact_row.phone,
                name=contact_row.name,
                channel=conversation.channel,  # type: ignore[arg-type]
            )
            result = self.runner.run_turn(
                execution,
                None,
                contact,
                history=lambda limit: store.history(contact.id, limit, 2**62),
                entitlements=self.entitlements,
            )
            error = result.error.reason if result.error else None
            execution_id = None
            if result.execution is not None:
                execution_id = store.save_execution(contact.id, result.execution, error)
            target = StoredInbound(0, contact.id, conversation.id)
            ids = store.store_outbound(
                target, self._parts(result), execution_id=execution_id, flow_id=execution.flow_id
            )
            self.session.commit()
        except Exception:
            self.session.rollback()
            log.exception("turn.resume_failed contact=%s", contact_id)
            return []
        return ids

    def _at_paywall(self, execution: ExecutionState) -> bool:
        flow = self.runner.flows.get(execution.flow_id)
        if flow is None or execution.status != "waiting":
            return False
        step = flow.steps.get(execution.current_step)
        return "paywall" in execution.step_state or getattr(step, "kind", "") == "paywall"

    def _answered(self, store: SqlStore, stored: StoredInbound, texts: list[str]) -> TurnOutcome:
        """Store and return a responder's answer; the flow does not run."""
        parts = [
            OutboundPart(body=body, author="system") for text in texts for body in self.split(text)
        ]
        store.store_outbound(
            stored, parts, execution_id=None, flow_id=None, status=self.outbound_status
        )
        store.finish_inbound(stored.message_id, "done", None, None)
        self.session.commit()
        return TurnOutcome(replies=[part.body for part in parts], message_id=stored.message_id)

    def _parts(self, result: TurnResult) -> list[OutboundPart]:
        parts: list[OutboundPart] = []
        for reply in result.replies:
            # A picture alone is a message with an empty body.
            bodies = self.split(reply.text) or ([""] if reply.media_url else [])
            for index, body in enumerate(bodies):
                last = index == len(bodies) - 1
                parts.append(
                    OutboundPart(
                        body=body,
                        author=reply.author,
                        step_id=reply.step_id,
                        usage=reply.usage if index == 0 else None,
                        template=reply.template if index == 0 else None,
                        media_url=reply.media_url if last else None,
                        delay_seconds=reply.delay_seconds if index == 0 else 0.0,
                    )
                )
        return parts

    def _answer_failure(self, stored: StoredInbound, error: Exception) -> TurnOutcome:
        """Answer with a fallback after a failure outside the flow (e.g. the database)."""
        text = self._fallback_text()
        try:
            store = SqlStore(self.session)
            store.store_outbound(
                stored,
                [OutboundPart(body=text, author="system")],
                execution_id=None,
                flow_id=None,
                status=self.outbound_status,
            )
            store.finish_inbound(stored.message_id, "failed", None, None)
            self.session.commit()
        except Exception:
            self.session.rollback()
            log.exception("turn.fallback_not_stored message=%s", stored.message_id)
            recorded = False
        else:
            recorded = True
        return TurnOutcome(
            replies=[text],
            message_id=stored.message_id,
            error=f"{type(error).__name__}",
            recorded=recorded,
        )

    def _fallback_text(self) -> str:
        flow = self.runner.flows.default
        if flow is not None and "{" not in flow.fallback:
            return flow.fallback
        return DEFAULT_FALLBACK


def store_incoming(session: Session, incoming: Incoming) -> StoredInbound | None:
    """Store an inbound message at once, keyed by ``MessageSid``.

    The webhook's whole database work when turns are queued: for a known
    contact, a SELECT and an INSERT (`SqlStore.store_inbound`). On PostgreSQL
    they run in autocommit, each statement its own transaction, which saves
    the BEGIN and COMMIT round trips: the INSERT is the one write and is
    atomic on its own, and a new contact's or conversation's row is an
    idempotent upsert. SQLite keeps one transaction (its BEGIN IMMEDIATE).

    Returns:
        The stored ids, or None for a ``MessageSid`` already stored.

    Raises:
        sqlalchemy.exc.OperationalError: the database is unreachable (nothing
            was stored).
    """
    fields = {
        "phone": incoming.phone,
        "name": incoming.name,
        "channel": incoming.channel,
        "address": incoming.address,
        "body": incoming.body,
        "message_sid": incoming.message_sid,
        "media": incoming.media,
        "details": _details(incoming),
    }
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return SqlStore(connection).store_inbound(**fields)
    try:
        stored = SqlStore(session).store_inbound(**fields)
    except Exception:
        session.rollback()
        raise
    session.commit()
    return stored


def _details(incoming: Incoming) -> dict[str, Any]:
    """What the inbound row keeps besides media URLs (content types, button, location)."""
    details: dict[str, Any] = {}
    if incoming.media_types:
        details["types"] = list(incoming.media_types)
    if incoming.button:
        details["button"] = dict(incoming.button)
    if incoming.location:
        details["location"] = dict(incoming.location)
    return details
