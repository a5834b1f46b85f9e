"""Who speaks to the contact: the bot or an agent, changed only by control events.

A conversation's `Conversation.controlled_by` is ``bot``, ``agent:<id>`` or,
while a handover waits for an agent to accept it, the handover's target
(``agent:<id>`` or ``queue:<name>``). Anything but ``bot`` keeps the bot
silent: `conversation.turn.Turns.run` stores the contact's messages as
``skipped`` (for the agent to read) and runs no flow.

Control changes only here, one `models.handover.ControlEvent` per change, in
the transaction that changes it:

- ``handover``: the bot (a flow step, the ``human`` phrase) or an agent
  (a transfer) passes the conversation to an agent or a queue;
- ``handover_confirmed``: an agent accepts it;
- ``takeover``: an agent takes control at once;
- ``handback``: the agent returns control to the bot, at a step of their
  choosing or where the flow left off;
- ``handover_expired``: nobody accepted it in time: the bot takes the
  conversation back and tells the contact (`handover.expiry`).

Every change takes the contact's row lock (which a turn and a timer take too)
and then the conversation's (which a send takes, `delivery.outbox`), so a
turn, a timer or a send either finished before the change or sees it. At a
``takeover`` the bot's messages still queued are canceled, and a send checks
`bot_may_send` under the conversation's lock: no bot message goes out between
a takeover and the handback. The execution's timer is paused while an agent
has control (its status is ``handed_over``, which timers skip) and resumes
with the time it had left.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from handover import hooks as handover_hooks
from models.entities import Conversation, Execution, Message, utcnow
from models.handover import ControlEvent
from models.store import OutboundPart, SqlStore, StoredInbound

log = logging.getLogger("parley.handover")

BOT = "bot"

#: Authors whose queued messages an agent's control holds back.
BOT_AUTHORS = ("bot", "system")


class ControlError(Exception):
    """The control event is not allowed now (e.g. handing back what one does not hold).

    Attributes:
        reason: What is wrong, for a 409 answer.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def agent(agent_id: int | str) -> str:
    """The ``controlled_by`` / author value of an agent: ``agent:<id>``."""
    return f"agent:{agent_id}"


@dataclass(frozen=True)
class Control:
    """Who has a conversation now.

    Attributes:
        controlled_by: ``bot``, ``agent:<id>`` or ``queue:<name>``.
        pending: A handover waits for an agent to accept it.
        since: When control last changed (None: the bot always had it).
    """

    controlled_by: str
    pending: bool
    since: dt.datetime | None


def control(session: Session, conversation_id: int) -> Control:
    """The conversation's control, from its row and its last control event."""
    controlled_by = session.scalar(
        sa.select(Conversation.controlled_by).where(Conversation.id == conversation_id)
    )
    last = _last_event(session, conversation_id)
    pending = last is not None and last.kind == "handover" and controlled_by != BOT
    return Control(controlled_by or BOT, pending, last.created_at if last else None)


def events(session: Session, conversation_id: int) -> list[ControlEvent]:
    """The conversation's control events, in order."""
    return list(
        session.scalars(
            sa.select(ControlEvent)
            .where(ControlEvent.conversation_id == conversation_id)
            .order_by(ControlEvent.id)
        )
    )


def _last_event(session: Session, conversation_id: int) -> ControlEvent | None:
    return session.scalars(
        sa.select(ControlEvent)
        .where(ControlEvent.conversation_id == conversation_id)
        .order_by(ControlEvent.id.desc())
        .limit(1)
    ).first()


def _lock(session: Session, conversation_id: int) -> Conversation:
    """Take the contact's lock, then the conversation's (the order turns and sends use)."""
    contact_id = session.scalar(
        sa.select(Conversation.contact_id).where(Conversation.id == conversation_id)
    )
    if contact_id is None:
        raise ControlError(f"no conversation {conversation_id}")
    SqlStore(session).lock_contact(contact_id)
    return session.scalars(
        sa.select(Conversation)
        .where(Conversation.id == conversation_id)
        .with_for_update(key_share=True)
        .execution_options(populate_existing=True)
    ).one()


def _record(
    session: Session,
    conversation: Conversation,
    kind: str,
    actor: str,
    target: str,
    details: dict[str, Any] | None = None,
) -> ControlEvent:
    event = ControlEvent(
        conversation_id=conversation.id,
        kind=kind,
        actor=actor,
        target=target,
        details=details or {},
        created_at=utcnow(),
    )
    session.add(event)
    session.flush()
    handover_hooks.queue(
        session,
        {
            "type": "control",
            "conversation_id": conversation.id,
            "kind": kind,
            "actor": actor,
            "target": target,
            "created_at": event.created_at.isoformat(),
        },
    )
    log.info("handover.%s conversation=%s actor=%s target=%s", kind, conversation.id, actor, target)
    return event


def _open_execution(session: Session, contact_id: int) -> Execution | None:
    return session.scalars(
        sa.select(Execution)
        .where(
            Execution.contact_id == contact_id,
            Execution.status.in_(("active", "waiting", "handed_over")),
        )
        .order_by(Execution.id.desc())
        .limit(1)
    ).first()


def _pause(session: Session, conversation: Conversation, now: dt.datetime) -> dict[str, Any]:
    """Mark the contact's execution ``handed_over``; what `_resume` needs to undo it."""
    execution = _open_execution(session, conversation.contact_id)
    if execution is None or execution.status == "handed_over":
        return {}
    paused: dict[str, Any] = {"execution": execution.id, "status": execution.status}
    if execution.wait_deadline is not None:
        deadline = execution.wait_deadline
        deadline = deadline if deadline.tzinfo else deadline.replace(tzinfo=dt.UTC)
        paused["remaining_seconds"] = max(0.0, (deadline - now).total_seconds())
    execution.status, execution.wait_deadline = "handed_over", None
    return {"paused": paused}


def _take_from_bot(
    session: Session, conversation: Conversation, kind: str, actor: str, target: str, **extra: Any
) -> ControlEvent:
    now = utcnow()
    details = {**_pause(session, conversation, now), **extra}
    conversation.controlled_by = target
    return _record(session, conversation, kind, actor, target, details)


def handover(session: Session, conversation_id: int, actor: str, target: str) -> ControlEvent:
    """Pass the conversation to an agent or a queue, to be accepted (``handover``).

    Args:
        session: The session; the caller commits.
        conversation_id: The conversation.
        actor: ``bot`` (a flow or the contact asked) or the agent in control
            (a transfer).
        target: ``agent:<id>`` or ``queue:<name>``.

    Returns:
        The event.

    Raises:
        ControlError: `actor` does not have the conversation.
    """
    conversation = _lock(session, conversation_id)
    if not (target.startswith("agent:") or target.startswith("queue:")):
        raise ControlError(f"a handover goes to agent:<id> or queue:<name>, not {target!r}")
    if conversation.controlled_by != actor:
        raise ControlError(f"{actor} does not have the conversation ({conversation.controlled_by})")
    if actor == BOT:
        return _take_from_bot(session, conversation, "handover", actor, target)
    conversation.controlled_by = target
    return _record(session, conversation, "handover", actor, target)


def confirm(session: Session, conversation_id: int, agent_id: int) -> ControlEvent:
    """The agent accepts a pending handover to them or to a queue (``handover_confirmed``).

    Raises:
        ControlError: no handover is pending, or it is for another agent.
    """
    conversation = _lock(session, conversation_id)
    me = agent(agent_id)
    state = control(session, conversation_id)
    if not state.pending:
        raise ControlError("no handover is waiting to be accepted")
    if conversation.controlled_by.startswith("agent:") and conversation.controlled_by != me:
        raise ControlError(f"the handover is for {conversation.controlled_by}")
    conversation.controlled_by = me
    return _record(session, conversation, "handover_confirmed", me, me)


def takeover(session: Session, conversation_id: int, agent_id: int) -> ControlEvent:
    """The agent takes control at once (``takeover``); the bot's queued messages are canceled.

    Raises:
        ControlError: another agent has the conversation.
    """
    conversation = _lock(session, conversation_id)
    me = agent(agent_id)
    current = conversation.controlled_by
    if current == me:
        raise ControlError("you already have this conversation")
    if current.startswith("agent:") and not control(session, conversation_id).pending:
        raise ControlError(f"{current} has the conversation; ask them to transfer it")
    session.execute(
        sa.update(Message)
        .where(
            Message.conversation_id == conversation.id,
            Message.direction == "outbound",
            Message.status == "pending",
            Message.author.in_(BOT_AUTHORS),
        )
        .values(status="canceled")
    )
    if current == BOT:
        return _take_from_bot(session, conversation, "takeover", me, me)
    conversation.controlled_by = me
    return _record(session, conversation, "takeover", me, me)


def handback(
    session: Session,
    conversation_id: int,
    actor: str,
    step: str | None = None,
    has_step: Callable[[str, str], bool] | None = None,
    kind: str = "handback",
) -> ControlEvent:
    """Return control to the bot (``handback``), at `step` or where the flow left off.

    The execution paused at the handover resumes: it waits again for the
    contact with the time its timer had left. Entering `step` is the turn
    service's, after this is committed (`handover.routing.hand_back`).

    Args:
        session: The session; the caller commits.
        conversation_id: The conversation.
        actor: The agent in control (``agent:<id>``), or ``system``.
        step: A step of the execution's flow to go on at, or None.
        has_step: ``has_step(flow_id, step_id)``: whether the flow has the
            step (the runner's); needed with `step`.
        kind: ``handback``, or ``handover_expired`` when nobody accepted it.

    Returns:
        The event.

    Raises:
        ControlError: `actor` does not have the conversation, the contact has
            no flow to go on with, or `step` is not a step of the flow.
    """
    conversation = _lock(session, conversation_id)
    if conversation.controlled_by == BOT:
        raise ControlError("the bot already has this conversation")
    if actor != "system" and conversation.controlled_by != actor:
        raise ControlError(f"{actor} does not have the conversation ({conversation.controlled_by})")
    conversation.controlled_by = BOT
    execution = _open_execution(session, conversation.contact_id)
    if execution is not None and execution.status == "handed_over":
        if step is not None:
            if has_step is None:
                raise ControlError("handing back at a step needs the flow runner")
            if not has_step(execution.flow_id, step):
                raise ControlError(f"flow {execution.flow_id!r} has no step {step!r}")
        paused = _paused(session, conversation.id, execution.id)
        execution.status = paused.get("status") or "waiting"
        if execution.status == "active":
            execution.status = "waiting"
        remaining = paused.get("remaining_seconds")
        if remaining is not None:
            execution.wait_deadline = utcnow() + dt.timedelta(seconds=remaining)
    elif step is not None:
        raise ControlError("the contact has no flow to go on with")
    return _record(session, conversation, kind, actor, BOT, {"step": step} if step else {})


def _paused(session: Session, conversation_id: int, execution_id: int) -> dict[str, Any]:
    for event in reversed(events(session, conversation_id)):
        paused = (event.details or {}).get("paused")
        if paused and paused.get("execution") == execution_id:
            return paused
    return {}


def _store(
    session: Session,
    conversation: Conversation,
    parts: list[OutboundPart],
    execution: Execution | None = None,
) -> list[int]:
    return SqlStore(session).store_outbound(
        StoredInbound(0, conversation.contact_id, conversation.id),
        parts,
        execution_id=execution.id if execution else None,
        flow_id=execution.flow_id if execution else None,
    )


def bot_may_send(session: Session, conversation_id: int, controlled_by: str, author: str) -> bool:
    """Whether a stored message may go out now, under the conversation's lock.

    Agents' messages always may; the bot's and the system's only while the bot
    has control, or while the bot's own handover waits for an agent (what the
    bot said before it handed over, "connecting you…", still goes out; it
    runs no turn meanwhile). After a takeover or an accepted handover, none.

    Args:
        session: The session holding the conversation's lock.
        conversation_id: The conversation.
        controlled_by: Its ``controlled_by``, read under that lock.
        author: The message's author (``bot``, ``system``, ``agent:<id>``).
    """
    if author not in BOT_AUTHORS or controlled_by == BOT:
        return True
    last = _last_event(session, conversation_id)
    if last is None:
        return True  # controlled_by set outside these events (an old row): keep sending
    return last.kind == "handover" and last.actor == BOT


def agent_message(
    session: Session,
    conversation_id: int,
    actor: str,
    body: str,
    template: dict[str, Any] | None = None,
) -> int:
    """Store an agent's message to the contact (author ``agent:<id>``), for sending.

    On WhatsApp, outside the 24-hour window only a template may go out
    (Twilio error 63016 otherwise): `template` (``{"content_sid",
    "content_variables"}``) is then sent instead of `body`.

    Raises:
        ControlError: the agent does not have the conversation, `body` is
            empty, or the WhatsApp window is closed and there is no template.
    """
    from delivery.window import window_open

    if not body.strip():
        raise ControlError("the message is empty")
    conversation = _lock(session, conversation_id)
    if conversation.controlled_by != actor:
        holder = conversation.controlled_by
        raise ControlError(f"take the conversation over first ({holder} has it)")
    if conversation.channel == "whatsapp" and not window_open(session, conversation.id):
        if not template:
            raise ControlError(OUTSIDE_WINDOW)
    else:
        template = None
    part = OutboundPart(body=body.strip(), author=actor, template=template)
    message_id = _store(session, conversation, [part])[0]
    announce_message(session, session.get_one(Message, message_id))
    return message_id


def announce_message(session: Session, message: Message) -> None:
    """Queue a message of a conversation an agent has for the agent apps' webhook."""
    handover_hooks.queue(
        session,
        {
            "type": "message",
            "conversation_id": message.conversation_id,
            "message_id": message.id,
            "direction": message.direction,
            "author": message.author,
            "body": message.body,
            "created_at": message.created_at.isoformat(),
        },
    )


#: Why an agent's free-form WhatsApp message is refused.
OUTSIDE_WINDOW = (
    "the contact last wrote more than 24 hours ago: WhatsApp only accepts a template now"
)
