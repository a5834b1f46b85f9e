"""Where a conversation goes: the ``human`` phrase, ``handover`` steps, available agents.

Also the handback's flow runner (`step_enterer`), which the control service
takes as an argument so that it needs no runner of its own.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from conversation.responder_settings import AfterHoursSettings
from engine.ports import Clock, ExecutionState
from engine.ports import Contact as EngineContact
from engine.steps.handover import STATE_KEY
from handover.control import BOT, EnterStep, agent, handover
from models.curation import User
from models.entities import Contact, Conversation, Execution, utcnow
from models.handover import AgentPresence, ControlEvent
from models.store import OutboundPart, SqlStore

if TYPE_CHECKING:
    from conversation.turn import Responder, Turns

log = logging.getLogger("parley.handover")


def contact_of(session: Session, conversation: Conversation) -> EngineContact:
    """The engine's view of the conversation's contact."""
    row = session.get_one(Contact, conversation.contact_id)
    return EngineContact(
        id=row.id,
        phone=row.phone,
        name=row.name,
        channel=conversation.channel,  # type: ignore[arg-type]
    )


def step_enterer(turns: Turns) -> EnterStep:
    """An `EnterStep` that runs the flow from a step with the turn service's runner."""

    def enter(row: Execution, conversation: Conversation, step: str) -> list[OutboundPart]:
        store = SqlStore(turns.session)
        state = store.active_execution(row.contact_id)
        assert state is not None
        result = turns.runner.enter_step(
            state,
            step,
            contact_of(turns.session, conversation),
            history=lambda limit: store.history(row.contact_id, limit, 2**62),
            entitlements=turns.entitlements,
        )
        store.save_execution(row.contact_id, state, result.error.reason if result.error else None)
        return [
            OutboundPart(body=body, author=reply.author, step_id=reply.step_id)
            for reply in result.replies
            for body in turns.split(reply.text)
        ]

    return enter


def human_request(
    session: Session,
    config: Mapping[str, Any],
    hours: AfterHoursSettings | None = None,
    clock: Clock | None = None,
) -> Responder:
    """A responder: the contact asks for a person (``HANDOVER_PHRASES``), from any step.

    The conversation is handed over to ``HANDOVER_QUEUE`` and the contact told
    ``HANDOVER_MESSAGE``; the flow does not run, and its execution is paused.
    Outside the opening `hours` (``after_hours`` of ``_settings.yaml``) the
    contact is also told when someone will answer (``HANDOVER_CLOSED_MESSAGE``).
    """
    phrases = {
        phrase.strip().casefold()
        for phrase in str(config.get("HANDOVER_PHRASES") or "").split(",")
        if phrase.strip()
    }
    queue = f"queue:{config.get('HANDOVER_QUEUE') or 'support'}"
    message = str(config.get("HANDOVER_MESSAGE") or "")

    def respond(contact: EngineContact, text: str) -> list[str] | None:
        if " ".join(text.split()).casefold() not in phrases:
            return None
        conversation = SqlStore(session).latest_conversation(contact.id)
        if conversation is None or conversation.controlled_by != BOT:
            return None
        handover(session, conversation.id, BOT, queue)
        texts = [message] if message else []
        note = closed_note(config, hours, clock)
        if note:
            texts.append(note)
        return texts

    return respond


def closed_note(
    config: Mapping[str, Any], hours: AfterHoursSettings | None, clock: Clock | None
) -> str | None:
    """``HANDOVER_CLOSED_MESSAGE`` with ``{opening}`` filled in, outside opening hours.

    Returns:
        The note, or None while the team is open (or no hours are configured).
    """
    closed = str(config.get("HANDOVER_CLOSED_MESSAGE") or "")
    if hours is None or clock is None or not closed:
        return None
    now = clock.now()
    opening = None if hours.is_open(now) else next_opening(hours, now)
    if opening is None:
        return None
    return closed.replace("{opening}", opening.strftime("%A %H:%M"))


def flow_handover(
    session: Session, conversation_id: int, execution: ExecutionState, queue: str
) -> ControlEvent | None:
    """After a turn that reached a ``handover`` step: hand over as the step says.

    ``agent:<email>`` becomes that agent (the `queue` when no active user has
    that email); ``available`` the available agent who waited longest (the
    `queue` when none is available).

    Returns:
        The event, or None when the execution is not at a handover.
    """
    request = execution.step_state.get(STATE_KEY)
    if not request or execution.id is None:
        return None
    row = session.get_one(Execution, execution.id, populate_existing=True)  # saved by Core
    row.step_state = {key: value for key, value in row.step_state.items() if key != STATE_KEY}
    target = _resolve(session, str(request.get("to") or ""), f"queue:{queue}")
    return handover(session, conversation_id, BOT, target)


def _resolve(session: Session, target: str, queue: str) -> str:
    kind, _, name = target.partition(":")
    if kind == "queue":
        return target
    if kind == "agent":
        found = session.scalar(
            sa.select(User.id).where(User.email == name.strip().lower(), User.active.is_(True))
        )
        if found is None:
            log.warning("handover.unknown_agent: to the queue instead")
            return queue
        return agent(found)
    return next_available(session, set()) or queue


def next_available(session: Session, tried: set[str]) -> str | None:
    """The available agent who waited longest since their last handover, not in `tried`.

    Marks them as just assigned. None when nobody (else) is available.
    """
    excluded = [int(value.partition(":")[2]) for value in tried if value.startswith("agent:")]
    presence = session.scalars(
        sa.select(AgentPresence)
        .join(User, User.id == AgentPresence.user_id)
        .where(
            AgentPresence.available.is_(True),
            User.active.is_(True),
            AgentPresence.user_id.not_in(excluded),
        )
        .order_by(AgentPresence.last_assigned_at.asc().nulls_first(), AgentPresence.user_id)
        .limit(1)
        .with_for_update(of=AgentPresence)
    ).first()
    if presence is None:
        return None
    presence.last_assigned_at = utcnow()
    return agent(presence.user_id)


def set_available(session: Session, user_id: int, available: bool) -> None:
    """Mark a console user available for ``handover: available`` steps, or not."""
    row = session.get(AgentPresence, user_id)
    if row is None:
        row = AgentPresence(user_id=user_id, available=available)
        session.add(row)
    row.available = available
    session.flush()


def next_opening(hours: AfterHoursSettings, moment: dt.datetime) -> dt.datetime | None:
    """When the opening `hours` next begin after `moment`, in their time zone (None: 2 weeks shut).

    Steps through the hours a quarter of an hour at a time (the spans are
    whole minutes; 15 minutes is the precision a contact needs).
    """
    step = dt.timedelta(minutes=15)
    probe = moment.replace(second=0, microsecond=0)
    probe -= dt.timedelta(minutes=probe.minute % 15)
    for _ in range(14 * 24 * 4):
        probe += step
        if hours.is_open(probe):
            return probe.astimezone(ZoneInfo(hours.timezone))
    return None
