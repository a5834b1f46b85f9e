"""The turn service: every turn, whatever started it, runs here (DESIGN.md, "A turn").

An inbound message (the webhook inline, a queued worker, ``flask chat``, the
simulator), a timer, a Twilio Studio step endpoint, the Executions API, an
agent's handback at a step and a payment that resumes an execution are each a
`TurnPlan`: which contact and conversation, what to ask of the engine, and how
the replies are stored. `TurnService.execute` then runs it the one way:

1. claim the contact's lease in a short transaction (`models.turn_store`): a
   contact's turns run one at a time, and no row lock is held across a turn;
2. read who the contact is, the conversation and who controls it, and the
   open execution; end that transaction (the connection goes back to the pool);
3. a person in control: the inbound message is stored ``skipped`` for them and
   the bot says nothing, on every path; responders (opt-out, welcome, ...) for
   inbound messages;
4. run the engine with no database connection held: model and HTTP calls
   happen here; history reads are short transactions of their own;
5. commit the execution, the transcript, the effects (`engine.effects`) and
   the outbound rows in one short transaction, only while the lease's fencing
   token is still ours and the bot still has control; otherwise nothing is
   written and the turn runs again (or, if a person took over meanwhile, is
   skipped).

A failure after the inbound message is stored answers the contact once: with
the fallback, stored like any reply, or, when not even that can be stored,
with nothing now and the real reply later (the message stays ``pending`` for
the sweeper) — never both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from conversation.inbound import Incoming, store_incoming
from conversation.plan import (
    ContactGone,
    History,
    LeaseLost,
    Preface,
    Responder,
    TurnOutcome,
    TurnPlan,
    TurnSettings,
    outbound_parts,
)
from conversation.voice import Heard, VoiceNotes
from engine.effects import HandOver
from engine.flow import DEFAULT_FALLBACK
from engine.ports import Contact, Entitlements, ExecutionState, HistoryMessage, Reply
from engine.runner import Runner, TurnResult
from engine.steps.base import TurnTimedOut
from handover.control import announce_message
from handover.routing import agents_configured, flow_handover
from models.entities import Message, utcnow
from models.store import OutboundPart, SqlStore, StoredInbound
from models.turn_store import SqlTurnStore, TurnView

log = logging.getLogger("parley.turns")

__all__ = [
    "ContactGone",
    "History",
    "Incoming",
    "LeaseLost",
    "Preface",
    "Responder",
    "TurnOutcome",
    "TurnPlan",
    "TurnService",
    "TurnSettings",
    "outbound_parts",
    "store_incoming",
]


class TurnService:
    """Runs turns against the database (see the module's docstring).

    Args:
        session: The SQLAlchemy session (Flask-SQLAlchemy's scoped session, or
            any session the caller owns). Committed by the turn.
        runner: The flow runner.
        split: Splits one reply into message bodies Twilio accepts.
        entitlements: Who may pass paywalls (everyone when None).
        responders: Checked in order before the flow (step 4 of a turn); the
            first that answers (returns a list of texts) ends the turn.
        settings: Leases and statuses.
        handover_note: The note for a contact handed over outside the agents'
            hours, or None (``note()`` returns None while they are open).
        voice: Transcribes voice notes before the engine runs
            (conversation/voice.py), or None (off).
    """

    def __init__(
        self,
        session: Session,
        runner: Runner,
        split: Callable[[str], list[str]],
        entitlements: Entitlements | None = None,
        responders: Sequence[Responder] = (),
        settings: TurnSettings | None = None,
        handover_note: Callable[[], str | None] | None = None,
        voice: VoiceNotes | None = None,
    ) -> None:
        self.session = session
        self.runner = runner
        self.split = split
        self.entitlements = entitlements
        self.responders = tuple(responders)
        self.settings = settings or TurnSettings()
        self.handover_note = handover_note
        self.voice = voice

    # -- inbound messages ----------------------------------------------------

    def handle(self, incoming: Incoming, flow_id: str | None = None) -> TurnOutcome:
        """Store an inbound message, then run its turn (inline: webhook, chat, simulator).

        Args:
            incoming: The message.
            flow_id: Run this flow rather than follow triggers (``flask chat``).

        Raises:
            sqlalchemy.exc.OperationalError: the database is unreachable while
                storing the message (nothing was stored; the caller answers 503).
        """
        stored = store_incoming(self.session, incoming)
        if stored is None:
            log.info("turn.duplicate message_sid=%s", incoming.message_sid)
            return TurnOutcome(duplicate=True)
        return self.run(stored, incoming, flow_id)

    def run(
        self,
        stored: StoredInbound,
        incoming: Incoming,
        flow_id: str | None = None,
        *,
        token: int | None = None,
        status: str | None = None,
        view: TurnView | None = None,
        on_replies: Callable[[], object] | None = None,
    ) -> TurnOutcome:
        """Run the turn of a stored inbound message.

        Args:
            stored: The stored inbound message.
            incoming: Its content.
            flow_id: Run this flow rather than follow triggers.
            token: The contact's lease, when the caller claimed it (a queued
                turn); else it is claimed here, waiting up to
                `TurnSettings.lease_wait_seconds` for a busy contact.
            status: The outbound rows' status (default `TurnSettings.outbound_status`).
            view: The contact and conversation, when the caller read them
                under `token` in the claim's still open transaction.
            on_replies: `TurnPlan.on_replies`.

        Returns:
            The outcome; ``busy`` (and nothing answered) when the contact
            stayed busy: the message stays ``pending`` for the sweeper.
        """
        inbound = incoming.as_inbound()
        status = status or self.settings.outbound_status
        runner = self.runner
        if status == "queued" and self.settings.deadline_seconds:
            # Answered in the webhook's TwiML: within Twilio's 15 s, or not at all.
            runner = replace(runner, turn_seconds=self.settings.deadline_seconds)

        heard: list[Heard] = []

        def engine(execution: ExecutionState | None, contact: Contact, history: History):
            message, turn_runner = inbound, runner
            voice = self.voice
            if voice is not None and voice.applies(inbound, self.runner.flows, execution, flow_id):
                # A voice note: transcribed here, with no connection held, in
                # the worker when turns are queued (the webhook only stored it).
                heard.append(voice.listen(inbound, runner.turn_seconds))
                if heard[0].inbound is None:
                    return TurnResult(execution, [Reply(heard[0].reply or "", author="system")])
                message = heard[0].inbound
                if runner.turn_seconds:  # the flow gets what is left of the deadline
                    left = max(runner.turn_seconds - heard[0].seconds, 0.1)
                    turn_runner = replace(runner, turn_seconds=left)
            return turn_runner.run_turn(
                execution,
                message,
                contact,
                history,
                flow_id=flow_id,
                entitlements=self.entitlements,
            )

        def record(store: SqlStore, *_: object) -> None:
            if heard:
                store.note_transcript(stored.message_id, heard[0].record)

        plan = TurnPlan(
            contact_id=stored.contact_id,
            conversation_id=stored.conversation_id,
            engine=engine,
            status=status,
            inbound=stored,
            incoming=incoming,
            responders=True,
            on_commit=record,
            on_replies=on_replies,
        )
        return self.execute(plan, token=token, view=view)

    # -- turns without an inbound message -------------------------------------

    def resume_payment(self, contact_id: int) -> list[int]:
        """Carry on a contact's execution that waits for a payment (the payment arrived).

        Returns:
            The outbound message ids stored (status ``queued``), for the caller
            to send; empty when the contact waits at no paywall.
        """

        def engine(execution: ExecutionState | None, contact: Contact, history: History):
            if execution is None or not self.runner.awaits_payment(execution):
                return None
            return self.runner.run_turn(
                execution, None, contact, history, entitlements=self.entitlements
            )

        plan = TurnPlan(contact_id, None, engine, status="queued")
        try:
            return self.execute(plan).message_ids
        except Exception:
            log.exception("turn.resume_failed contact=%s", contact_id)
            return []

    def enter_step(self, conversation_id: int, contact_id: int, step_id: str) -> list[int]:
        """Enter `step_id` of the contact's execution afresh (an agent handed back there).

        Returns:
            The outbound message ids stored (status ``queued``), to send.

        Raises:
            KeyError: the execution's flow has no such step, or there is no execution.
        """

        def engine(execution: ExecutionState | None, contact: Contact, history: History):
            if execution is None:
                raise KeyError("the contact has no flow to go on with")
            return self.runner.enter_step(
                execution, step_id, contact, history, entitlements=self.entitlements
            )

        plan = TurnPlan(contact_id, conversation_id, engine, status="queued", raise_errors=True)
        return self.execute(plan).message_ids

    # -- the turn ---------------------------------------------------------------

    def claim(
        self, contact_id: int, wait_seconds: float = 0.0, *, commit: bool = True
    ) -> int | None:
        """Claim the contact's lease, retrying for up to `wait_seconds` while it is busy.

        Args:
            contact_id: The contact.
            wait_seconds: How long to keep trying while another turn holds it.
            commit: Commit the claim; False leaves its transaction open for the
                caller's first reads (one round trip less per turn).

        Returns:
            The fencing token, or None when another turn still holds the contact.

        Raises:
            ContactGone: no such contact (erased since its task was queued).
            sqlalchemy.exc.OperationalError: the database is unreachable.
        """
        deadline = time.monotonic() + wait_seconds
        pause = 0.02
        while True:
            try:
                token = SqlTurnStore(self.session).claim(
                    contact_id, utcnow(), self.settings.lease_seconds
                )
                if token is None or commit:
                    self.session.commit()
            except IntegrityError as error:  # the lease's foreign key: no such contact
                self.session.rollback()
                raise ContactGone(contact_id) from error
            except Exception:
                self.session.rollback()
                raise
            if token is not None or time.monotonic() >= deadline:
                return token
            time.sleep(min(pause, max(deadline - time.monotonic(), 0)))
            pause = min(pause * 2, 0.25)

    def execute(
        self, plan: TurnPlan, token: int | None = None, view: TurnView | None = None
    ) -> TurnOutcome:
        """Run `plan` as one turn (the module's docstring says how).

        Args:
            plan: The turn.
            token: The contact's lease when the caller already claimed it
                (its transaction may still be open: the turn's reads join it).
            view: What the caller read of the contact and conversation under
                `token` (read here when None, and again on every later attempt).

        Raises:
            Exception: with `TurnPlan.raise_errors`, whatever failed (nothing
                was written; the lease is released).
        """
        for attempt in range(3):
            if token is None:
                waits = plan.wait if plan.wait is not None else plan.inbound is not None
                wait = self.settings.lease_wait_seconds if waits else 0.0
                token = self.claim(plan.contact_id, wait, commit=False)
                if token is None:
                    log.info("turn.busy contact=%s", plan.contact_id)
                    message_id = plan.inbound.message_id if plan.inbound else None
                    return TurnOutcome(message_id=message_id, recorded=False, busy=True)
            try:
                return self._run(plan, token, view)
            except LeaseLost:
                log.warning("turn.lease_lost contact=%s attempt=%d", plan.contact_id, attempt + 1)
                token = view = None
                if plan.inbound is not None and not self._still_pending(plan.inbound):
                    return TurnOutcome(message_id=plan.inbound.message_id)
            except Exception as error:
                self.session.rollback()
                if plan.raise_errors or plan.inbound is None:
                    self._release(plan.contact_id, token)
                    raise
                log.exception(
                    "turn.failed contact=%s message=%s", plan.contact_id, plan.inbound.message_id
                )
                return self._answer_failure(plan, token, error)
        raise RuntimeError(f"contact {plan.contact_id}: the lease was lost three times in a row")

    def _run(self, plan: TurnPlan, token: int, view: TurnView | None = None) -> TurnOutcome:
        """One attempt at the turn under the lease `token`.

        The claim's transaction is still open: the reads and the responders
        join it, and one commit ends it before the engine runs.
        """
        session = self.session
        store = SqlStore(session)
        if view is None:
            view = SqlTurnStore(session).view(plan.contact_id, plan.conversation_id)
        if view is None:
            session.rollback()
            self._release(plan.contact_id, token)
            return TurnOutcome()
        outcome = TurnOutcome(message_id=plan.inbound.message_id if plan.inbound else None)
        if view.controlled_by != "bot":
            return self._skip(plan, view, token, outcome)
        execution = store.active_execution(plan.contact_id)
        contact = Contact(view.contact_id, view.phone, view.name, view.channel)
        prefaces: list[str] = []
        incoming = plan.incoming
        if (
            plan.responders
            and incoming is not None
            and self.runner.flows.responders_apply(
                execution.flow_id if execution else None, incoming.body, incoming.address
            )
        ):
            answer, prefaced = self._respond(contact, incoming.body, prefaces)
            if answer is not None:
                return self._answered(plan, view, token, prefaces + answer)
            if prefaced:  # a reset code or a welcome: the execution may have ended
                execution = store.active_execution(plan.contact_id)
        session.commit()  # the reads are done: no connection is held from here
        result = plan.engine(execution, contact, self._history(plan))
        session.commit()  # anything the engine's ports read
        if result is None:
            self._release(plan.contact_id, token)
            return outcome
        result.replies[:0] = [Reply(text=text, author="system") for text in prefaces]
        return self._commit(plan, view, token, execution, result, outcome)

    def _commit(
        self,
        plan: TurnPlan,
        view: TurnView,
        token: int,
        before: ExecutionState | None,
        result: TurnResult,
        outcome: TurnOutcome,
    ) -> TurnOutcome:
        """Step 6: write the turn in one transaction while the lease and control hold."""
        session, store, leases = self.session, SqlStore(self.session), SqlTurnStore(self.session)
        if not leases.fence(plan.contact_id, token):
            session.rollback()
            raise LeaseLost()
        stamp = plan.inbound.message_id if plan.inbound is not None else None
        controlled_by = leases.controller(view.conversation_id, stamp)
        if controlled_by != "bot":  # a person took over while the engine ran
            session.rollback()  # the fence's release too: `_skip` releases again
            return self._skip(plan, view, token, outcome, controlled_by)
        if before is not None and before.id and result.execution is not before:
            store.end_execution(before.id)
        error = result.error.reason if result.error else None
        execution_id = flow_id = None
        if result.execution is not None:
            execution_id = store.save_execution(plan.contact_id, result.execution, error)
            flow_id = result.execution.flow_id
        parts = outbound_parts(result.replies, self.split if plan.split else None)
        parts += self._apply_effects(view, result, execution_id)
        target = plan.inbound or StoredInbound(0, plan.contact_id, view.conversation_id)
        ids = store.store_outbound(
            target, parts, execution_id=execution_id, flow_id=flow_id, status=plan.status
        )
        if plan.inbound is not None:
            status = "done" if not error else "failed"
            if isinstance(result.error, TurnTimedOut):
                status = "timed_out"
            calls = [call.recorded() for call in result.llm_calls]
            decisions = [decision.recorded() for decision in result.moderation]
            message_id = plan.inbound.message_id
            store.finish_inbound(
                message_id, status, execution_id, flow_id, calls, decisions, stamp=False
            )
        if plan.on_commit is not None:
            plan.on_commit(store, result, execution_id, ids)
        claimed = plan.on_replies() if plan.on_replies is not None else None
        session.commit()
        outcome.claimed = claimed
        log.info(
            "turn.done contact=%s flow=%s steps=%s messages=%d error=%s",
            plan.contact_id,
            flow_id,
            ",".join(result.steps),
            len(ids),
            error,
        )
        outcome.replies = [part.body for part in parts]
        outcome.media = [part.media_url for part in parts]
        outcome.error, outcome.result = error, result
        outcome.message_ids, outcome.execution_id = ids, execution_id
        return outcome

    def _apply_effects(
        self, view: TurnView, result: TurnResult, execution_id: int | None
    ) -> list[OutboundPart]:
        """Carry out the turn's effects in its transaction; the texts they add."""
        parts: list[OutboundPart] = []
        for effect in result.effects:
            if isinstance(effect, HandOver) and execution_id is not None:
                if effect.only_if_agents and not agents_configured(
                    self.session, self.settings.agent_app
                ):
                    log.info("turn.handover_skipped reason=no_agents contact=%s", view.contact_id)
                    continue
                event = flow_handover(
                    self.session,
                    view.conversation_id,
                    effect.to,
                    self.settings.handover_queue,
                )
                note = self.handover_note() if event is not None and self.handover_note else None
                if note:  # outside the agents' hours: say when someone will answer
                    parts.append(OutboundPart(body=note, author="system"))
            # AwaitPayment needs nothing now: the execution waits, and the
            # payment's webhook resumes it (`resume_payment`).
        return parts

    def _skip(
        self,
        plan: TurnPlan,
        view: TurnView,
        token: int,
        outcome: TurnOutcome,
        controlled_by: str | None = None,
    ) -> TurnOutcome:
        """A person has the conversation: the bot says nothing; the message is for them."""
        session, store = self.session, SqlStore(self.session)
        SqlTurnStore(session).release(plan.contact_id, token)
        if plan.inbound is not None:
            store.finish_inbound(plan.inbound.message_id, "skipped", None, None)
            announce_message(session, session.get_one(Message, plan.inbound.message_id))
        session.commit()
        outcome.controlled_by = controlled_by or view.controlled_by
        log.info("turn.skipped contact=%s controlled_by=%s", plan.contact_id, outcome.controlled_by)
        return outcome

    def _respond(
        self, contact: Contact, text: str, prefaces: list[str]
    ) -> tuple[list[str] | None, bool]:
        """Step 4: the first responder's answer, collecting prefaces on the way.

        Returns:
            The answer (None: the flow runs), and whether any responder
            returned a `Preface` (which may have changed the execution).
        """
        prefaced = False
        for responder in self.responders:
            answer = responder(contact, text)
            if isinstance(answer, Preface):
                prefaces.extend(answer.texts)
                prefaced = True
            elif answer is not None:
                return answer, prefaced
        return None, prefaced

    def _answered(
        self, plan: TurnPlan, view: TurnView, token: int, texts: list[str]
    ) -> TurnOutcome:
        """Store a responder's answer; the flow does not run."""
        session, store = self.session, SqlStore(self.session)
        if not SqlTurnStore(session).fence(plan.contact_id, token):
            session.rollback()
            raise LeaseLost()
        parts = [
            OutboundPart(body=body, author="system") for text in texts for body in self.split(text)
        ]
        assert plan.inbound is not None
        ids = store.store_outbound(
            plan.inbound, parts, execution_id=None, flow_id=None, status=plan.status
        )
        store.finish_inbound(plan.inbound.message_id, "done", None, None)
        claimed = plan.on_replies() if plan.on_replies is not None else None
        session.commit()
        return TurnOutcome(
            replies=[part.body for part in parts],
            message_id=plan.inbound.message_id,
            message_ids=ids,
            claimed=claimed,
        )

    def _answer_failure(self, plan: TurnPlan, token: int, error: Exception) -> TurnOutcome:
        """Answer an inbound message with the fallback after a failure outside the flow.

        Stored like any reply, under the lease; when even that cannot be
        written, nothing is answered now and the message stays ``pending``
        for a later run (the sweeper): one answer, never two.
        """
        assert plan.inbound is not None
        text = self._fallback_text()
        session, store = self.session, SqlStore(self.session)
        try:
            if not SqlTurnStore(session).fence(plan.contact_id, token):
                session.rollback()
                return TurnOutcome(message_id=plan.inbound.message_id, recorded=False)
            ids = store.store_outbound(
                plan.inbound,
                [OutboundPart(body=text, author="system")],
                execution_id=None,
                flow_id=None,
                status=plan.status,
            )
            store.finish_inbound(plan.inbound.message_id, "failed", None, None)
            session.commit()  # no `on_replies`: the send is looked for after
        except Exception:
            session.rollback()
            log.exception("turn.fallback_not_stored message=%s", plan.inbound.message_id)
            return TurnOutcome(
                message_id=plan.inbound.message_id,
                error=type(error).__name__,
                recorded=False,
            )
        return TurnOutcome(
            replies=[text],
            message_id=plan.inbound.message_id,
            error=type(error).__name__,
            message_ids=ids,
        )

    def _history(self, plan: TurnPlan) -> History:
        """``history(n)`` as a short read of its own, so the model's wait holds no connection."""
        before = plan.inbound.message_id if plan.inbound else None

        def read(limit: int) -> list[HistoryMessage]:
            try:
                return SqlStore(self.session).history(plan.contact_id, limit, before)
            finally:
                self.session.commit()

        return read

    def _still_pending(self, stored: StoredInbound) -> bool:
        try:
            status = self.session.get_one(Message, stored.message_id, populate_existing=True)
            return status.turn_status == "pending"
        finally:
            self.session.commit()

    def _release(self, contact_id: int, token: int | None) -> None:
        """Free the lease we hold (best effort: an unreleased lease expires)."""
        if token is None:
            return
        try:
            SqlTurnStore(self.session).release(contact_id, token)
            self.session.commit()
        except Exception:
            self.session.rollback()
            log.warning("turn.release_failed contact=%s", contact_id)

    def _fallback_text(self) -> str:
        flow = self.runner.flows.default
        if flow is not None and "{" not in flow.fallback:
            return flow.fallback
        return DEFAULT_FALLBACK
