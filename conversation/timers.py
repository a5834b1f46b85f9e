"""Timers: timeouts of waiting steps fire from the database (``flask engine tick``).

A step that waits with ``timeout: {after: 24h, next: nudge}`` stores its
deadline in ``execution.wait_deadline``; nothing is kept in memory, so a
restart loses no timer. `tick` finds the executions whose deadline has
passed, and for each one, in its own transaction: takes the contact's lock
(skipping a contact another process or a turn holds: the next tick gets it),
checks the execution is still waiting past its deadline (so a second tick,
here or in another process, does nothing), moves it on along its timeout
(`engine.runner.Runner.fire_timeout`), stores the replies and commits; then
sends them through the Twilio REST API (`delivery.outbound.send_stored`,
which cancels them for contacts who opted out).

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

from conversation.turn import Turns
from engine.ports import Contact, ExecutionState
from handover.routing import flow_handover
from models.entities import Contact as ContactRow
from models.entities import Conversation, Execution, Message
from models.store import OutboundPart, SqlStore, StoredInbound

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


def due(turns: Turns, now: dt.datetime, limit: int = BATCH) -> list[tuple[int, int]]:
    """Executions waiting past their deadline, earliest first: ``[(execution id, contact id)]``."""
    session = turns.session
    bound = as_utc(now)
    if session.get_bind().dialect.name == "sqlite":
        bound = bound.replace(tzinfo=None)  # stored as naive UTC text, compared as text
    rows = session.execute(
        sa.select(Execution.id, Execution.contact_id)
        .where(Execution.status == "waiting", Execution.wait_deadline <= bound)
        .order_by(Execution.wait_deadline, Execution.id)
        .limit(limit)
    ).all()
    session.rollback()  # end the read; each timer gets its own transaction
    return [(execution_id, contact_id) for execution_id, contact_id in rows]


def tick(turns: Turns, now: dt.datetime, send: SendStored | None = None) -> TickReport:
    """Fire every timer due at `now`.

    Args:
        turns: The turn service (session, runner, splitter, entitlements).
        now: The time to fire up to (aware; the clock, or a test's).
        send: ``send(message_ids)`` sends stored messages (through
            `delivery.outbound.send_stored`); None stores them only.

    Returns:
        What fired and what was stored.
    """
    report = TickReport()
    for execution_id, contact_id in due(turns, now):
        ids = fire(turns, execution_id, contact_id, now)
        if ids is None:
            report.skipped += 1
            continue
        report.fired += 1
        report.message_ids.extend(ids)
        if send is not None and ids:
            send(ids)
    return report


def fire(turns: Turns, execution_id: int, contact_id: int, now: dt.datetime) -> list[int] | None:
    """Fire one execution's timeout in its own transaction.

    Returns:
        The outbound message ids stored (possibly none), or None when it did
        not fire: the contact is locked by someone else, or the execution no
        longer waits past its deadline (answered, or fired by another tick).
    """
    session = turns.session
    store = SqlStore(session)
    try:
        # SKIP LOCKED (PostgreSQL): another tick or a turn has the contact; the
        # next tick will see whether there is still something to do.
        contact_row = session.scalars(
            sa.select(ContactRow)
            .where(ContactRow.id == contact_id)
            .with_for_update(key_share=True, skip_locked=True)
        ).first()
        execution = store.active_execution(contact_id) if contact_row else None
        if contact_row is None or not _still_due(execution, execution_id, now):
            session.rollback()
            return None
        assert execution is not None
        conversation = _conversation_of(session, execution_id) or store.latest_conversation(
            contact_id
        )
        if conversation is None:
            session.rollback()
            return None
        contact = Contact(
            id=contact_row.id,
            phone=contact_row.phone,
            name=contact_row.name,
            channel=conversation.channel,  # type: ignore[arg-type]
        )
        result = turns.runner.fire_timeout(
            execution,
            contact,
            history=lambda limit: store.history(contact_id, limit, 2**62),
            entitlements=turns.entitlements,
        )
        if not result.steps:
            # Nothing to move on to (the step lost its timeout in a new version,
            # or the flow restarts at the next message): stop asking.
            execution.wait_deadline = None
        error = result.error.reason if result.error else None
        store.save_execution(contact_id, execution, error)
        # A timeout that leads to a `handover` step hands over as a turn does.
        flow_handover(session, conversation.id, execution, turns.handover_queue)
        parts = [
            OutboundPart(
                body=body,
                author=reply.author,
                step_id=reply.step_id,
                usage=reply.usage if index == 0 else None,
            )
            for reply in result.replies
            for index, body in enumerate(turns.split(reply.text))
        ]
        ids = store.store_outbound(
            StoredInbound(0, contact_id, conversation.id),
            parts,
            execution_id=execution_id,
            flow_id=execution.flow_id,
        )
        session.commit()
    except Exception:
        session.rollback()
        log.exception("timer.failed execution=%s contact=%s", execution_id, contact_id)
        return None
    log.info(
        "timer.fired execution=%s contact=%s steps=%s messages=%d",
        execution_id,
        contact_id,
        ",".join(result.steps),
        len(ids),
    )
    return ids


def _still_due(execution: ExecutionState | None, execution_id: int, now: dt.datetime) -> bool:
    return (
        execution is not None
        and execution.id == execution_id
        and execution.status == "waiting"
        and execution.wait_deadline is not None
        and as_utc(execution.wait_deadline) <= as_utc(now)
    )


def _conversation_of(session: Session, execution_id: int) -> Conversation | None:
    """The conversation the execution last spoke in."""
    return session.scalars(
        sa.select(Conversation)
        .join(Message, Message.conversation_id == Conversation.id)
        .where(Message.execution_id == execution_id)
        .order_by(Message.id.desc())
        .limit(1)
    ).first()
