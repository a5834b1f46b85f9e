"""Where a conversation goes: the ``human`` phrase, ``handover`` steps, available agents.

Also the handback at a step (`hand_back`): the control change is committed
first, then the turn service runs the flow from that step like any turn.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from sqlalchemy.orm import Session

from config import Settings
from conversation.responder_settings import AfterHoursSettings
from engine.ports import Clock
from engine.ports import Contact as EngineContact
from handover.control import BOT, ControlError, agent, handback, handover
from models.curation import User
from models.entities import Conversation, utcnow
from models.handover import AgentPresence, ControlEvent
from models.store import SqlStore

if TYPE_CHECKING:
    from conversation.turn import Responder, TurnService

log = logging.getLogger("parley.handover")


def hand_back(
    turns: TurnService, conversation_id: int, actor: str, step: str | None = None
) -> list[int]:
    """Return control to the bot (``handback``), then run the flow from `step` if given.

    The handback is committed first (so its event comes before anything the
    step says or does, a new handover included); the step then runs as a turn
    of its own (`TurnService.enter_step`), with no lock held during its model calls.

    Args:
        turns: The turn service (its session is committed).
        conversation_id: The conversation.
        actor: The agent in control (``agent:<id>``), or ``system``.
        step: A step of the execution's flow to go on at, or None for where
            the flow left off.

    Returns:
        The outbound message ids the step stored, to send.

    Raises:
        ControlError: `actor` does not have the conversation, the contact has
            no flow, or `step` is not a step of its flow (nothing was changed).
    """
    session = turns.session
    try:
        event = handback(session, conversation_id, actor, step, has_step=turns.runner.has_step)
        contact_id = session.get_one(Conversation, conversation_id).contact_id
        session.commit()
    except Exception:
        session.rollback()
        raise
    log.info("handover.handback conversation=%s event=%s step=%s", conversation_id, event.id, step)
    if step is None:
        return []
    try:
        return turns.enter_step(conversation_id, contact_id, step)
    except KeyError as error:  # the flow changed since the check
        raise ControlError(str(error.args[0])) from error


def human_request(
    session: Session,
    settings: Settings,
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
        for phrase in settings.handover_phrases.split(",")
        if phrase.strip()
    }
    queue = f"queue:{settings.handover_queue}"
    message = settings.handover_message

    def respond(contact: EngineContact, text: str) -> list[str] | None:
        if " ".join(text.split()).casefold() not in phrases:
            return None
        conversation = SqlStore(session).latest_conversation(contact.id)
        if conversation is None or conversation.controlled_by != BOT:
            return None
        handover(session, conversation.id, BOT, queue)
        texts = [message] if message else []
        note = closed_note(settings.handover_closed_message, hours, clock)
        if note:
            texts.append(note)
        return texts

    return respond


def closed_note(closed: str, hours: AfterHoursSettings | None, clock: Clock | None) -> str | None:
    """`closed` (``HANDOVER_CLOSED_MESSAGE``) with ``{opening}`` filled in, outside opening hours.

    Returns:
        The note, or None while the team is open (or no hours are configured).
    """
    if hours is None or clock is None or not closed:
        return None
    now = clock.now()
    opening = None if hours.is_open(now) else next_opening(hours, now)
    if opening is None:
        return None
    return closed.replace("{opening}", opening.strftime("%A %H:%M"))


def flow_handover(
    session: Session, conversation_id: int, target: str, queue: str
) -> ControlEvent | None:
    """Hand over as a ``handover`` step asked (its `engine.effects.HandOver`), in the turn's commit.

    ``agent:<email>`` becomes that agent (the `queue` when no active user has
    that email); ``available`` the available agent who waited longest (the
    `queue` when none is available).

    Returns:
        The event, or None when the bot no longer has the conversation.
    """
    conversation = session.get(Conversation, conversation_id)
    if conversation is None:
        return None
    target = _resolve(session, target, f"queue:{queue}")
    try:
        return handover(session, conversation_id, BOT, target)
    except ControlError:
        log.warning("handover.not_from_bot conversation=%s", conversation_id)
        return None


def agents_configured(session: Session, agent_app: bool = False) -> bool:
    """Whether people answer handed-over conversations (moderation's automatic handover).

    True when an agent app gets the control events (`agent_app`:
    ``AGENT_WEBHOOK_URL`` is set), an active console user has the ``agent``
    role, or an active user of any role marked themselves available in the
    inbox (an admin who answers too). An admin or a curator alone is not an
    agent: a deployment with no one answering keeps the bot in the conversation.
    """
    if agent_app:
        return True
    found = session.scalar(
        sa.select(User.id)
        .outerjoin(AgentPresence, AgentPresence.user_id == User.id)
        .where(
            User.active.is_(True),
            sa.or_(User.role == "agent", AgentPresence.available.is_(True)),
        )
        .limit(1)
    )
    return found is not None


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
