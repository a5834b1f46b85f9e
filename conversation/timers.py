"""Timers: timeouts of waiting steps fire from the database (``flask engine tick``).

A step that waits with ``timeout: {after: 24h, next: nudge}`` stores its
deadline in ``execution.wait_deadline``; nothing is kept in memory, so a
restart loses no timer. `tick` finds the executions whose deadline has
passed, and fires each one as a turn of the turn service (conversation/turn.py):
it claims the contact (a contact whose turn is running is skipped: the next
tick gets it), checks the execution is still waiting past its deadline (so a
second tick, here or in another process, does nothing), moves it on along its
timeout (`engine.runner.Runner.fire_timeout`) and commits the replies like any
turn's, template, media and delay included; then sends them through the Twilio
REST API (`delivery.outbound.send_stored`, which cancels them for contacts who
opted out, and sends the WhatsApp template outside the 24-hour window).

A crash between the commit and the send leaves the replies stored as
``queued`` and unsent: a timer fires at most once.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from conversation.turn import History, TurnPlan, TurnService
from engine.ports import Contact, ExecutionState
from engine.runner import TurnResult
from models.entities import Execution, Message

log = logging.getLogger("parley.timers")

#: ``send(message_ids)``: sends stored outbound messages, in order.
SendStored = Callable[[list[int]], object]

#: At most this many timers per tick; the rest wait for the next one.
BATCH = 500


@dataclass
class TickReport:
    """What a tick did.

    Attributes:
        fired: Executions moved on along their timeout.
        skipped: Due executions left alone (locked by another process or turn,
            or no longer due when locked).
        message_ids: The outbound messages stored, in order.
    """

    fired: int = 0
    skipped: int = 0
    message_ids: list[int] = field(default_factory=list)


def as_utc(moment: dt.datetime) -> dt.datetime:
    """`moment` as an aware UTC datetime; a naive one (SQLite gives those back) is UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def due(session: Session, now: dt.datetime, limit: int = BATCH) -> list[tuple[int, int]]:
    """Executions waiting past their deadline, earliest first: ``[(execution id, contact id)]``."""
    bound = as_utc(now)
    if session.get_bind().dialect.name == "sqlite":
        bound = bound.replace(tzinfo=None)  # stored as naive UTC text, compared as text
    rows = session.execute(
        sa.select(Execution.id, Execution.contact_id)
        .where(Execution.status == "waiting", Execution.wait_deadline <= bound)
        .order_by(Execution.wait_deadline, Execution.id)
        .limit(limit)
    ).all()
    session.rollback()  # end the read; each timer is a turn of its own
    return [(execution_id, contact_id) for execution_id, contact_id in rows]


def tick(turns: TurnService, now: dt.datetime, send: SendStored | None = None) -> TickReport:
    """Fire every timer due at `now`.

    Args:
        turns: The turn service.
        now: The time to fire up to (aware; the clock, or a test's).
        send: ``send(message_ids)`` sends stored messages (through
            `delivery.outbound.send_stored`); None stores them only.

    Returns:
        What fired and what was stored.
    """
    report = TickReport()
    for execution_id, contact_id in due(turns.session, now):
        ids = fire(turns, execution_id, contact_id, now)
        if ids is None:
            report.skipped += 1
            continue
        report.fired += 1
        report.message_ids.extend(ids)
        if send is not None and ids:
            send(ids)
    return report


def fire(
    turns: TurnService, execution_id: int, contact_id: int, now: dt.datetime
) -> list[int] | None:
    """Fire one execution's timeout as a turn.

    Returns:
        The outbound message ids stored (possibly none), or None when it did
        not fire: the contact's turn is running elsewhere, or the execution no
        longer waits past its deadline (answered, or fired by another tick).
    """
    fired: list[str] = []

    def engine(
        execution: ExecutionState | None, contact: Contact, history: History
    ) -> TurnResult | None:
        if not _still_due(execution, execution_id, now):
            return None
        assert execution is not None
        result = turns.runner.fire_timeout(
            execution, contact, history, entitlements=turns.entitlements
        )
        if not result.steps:
            # Nothing to move on to (the step lost its timeout in a new version,
            # or the flow restarts at the next message): stop asking.
            execution.wait_deadline = None
        fired.append(",".join(result.steps))
        return result

    conversation_id = _conversation_of(turns.session, execution_id)
    plan = TurnPlan(contact_id, conversation_id, engine, status="queued")
    try:
        outcome = turns.execute(plan)
    except Exception:
        log.exception("timer.failed execution=%s contact=%s", execution_id, contact_id)
        return None
    if outcome.busy or not fired:
        return None
    log.info(
        "timer.fired execution=%s contact=%s steps=%s messages=%d",
        execution_id,
        contact_id,
        fired[0],
        len(outcome.message_ids),
    )
    return outcome.message_ids


def _still_due(execution: ExecutionState | None, execution_id: int, now: dt.datetime) -> bool:
    return (
        execution is not None
        and execution.id == execution_id
        and execution.status == "waiting"
        and execution.wait_deadline is not None
        and as_utc(execution.wait_deadline) <= as_utc(now)
    )


def _conversation_of(session: Session, execution_id: int) -> int | None:
    """The conversation the execution last spoke in (None: the contact's latest)."""
    try:
        return session.scalars(
            sa.select(Message.conversation_id)
            .where(Message.execution_id == execution_id)
            .order_by(Message.id.desc())
            .limit(1)
        ).first()
    finally:
        session.rollback()
