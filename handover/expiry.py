"""Handovers nobody accepted in time: to the next available agent, or back to the bot.

A handover to a Flex workflow's queue (``queue:WW…``, an imported Studio
*Send to Flex*) never expires: as a Flex task, the contact stays queued until
an agent answers.

The ``clock`` process (`cli.runtime.run_tick`) and ``flask handover expire``
run `expire_due_handovers` with the app's settings (from the container).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Sequence

import sqlalchemy as sa
from sqlalchemy.orm import Session

from config import Settings
from handover.control import BOT, _last_event, _lock, _record, _store, events, handback
from handover.routing import next_available
from models.entities import Conversation, as_utc
from models.store import OutboundPart

#: ``pick(session, tried)``: the next agent (``agent:<id>``) for a handover
#: nobody accepted, not one of `tried`; None when nobody else is available.
PickAgent = Callable[[Session, set[str]], "str | None"]


def expire_handovers(
    session: Session,
    now: dt.datetime,
    confirm_seconds: float,
    message: str,
    pick: PickAgent | None = None,
) -> tuple[int, list[int]]:
    """Deal with every handover nobody accepted within `confirm_seconds`.

    With `pick`, it goes to the next available agent (a new ``handover``
    event by ``system``, whose wait starts afresh); when there is none, or
    without `pick`, back to the bot: a ``handover_expired`` event, the paused
    execution resumes, and the contact is told `message`. Each conversation
    is checked again under its lock, so one accepted meanwhile stays accepted.

    Returns:
        How many handovers went back to the bot, and the outbound message ids
        stored (to send).
    """
    cutoff = now - dt.timedelta(seconds=confirm_seconds)
    candidates = session.scalars(
        sa.select(Conversation.id).where(Conversation.controlled_by != BOT)
    ).all()
    session.commit()
    ids: list[int] = []
    expired = 0
    for conversation_id in candidates:
        conversation = _lock(session, conversation_id)
        last = _last_event(session, conversation_id)
        if last is None or last.kind != "handover" or as_utc(last.created_at) > cutoff:
            session.rollback()
            continue
        if is_flex_queue(last.target):
            session.rollback()
            continue
        following = pick(session, _tried(session, conversation_id)) if pick else None
        if following is not None:
            conversation.controlled_by = following
            _record(session, conversation, "handover", "system", following)
            session.commit()
            continue
        handback(session, conversation_id, "system", kind="handover_expired")
        if message:
            ids += _store(session, conversation, [OutboundPart(body=message, author="system")])
        session.commit()
        expired += 1
    return expired, ids


def is_flex_queue(target: str | None) -> bool:
    """Whether a handover target is a Flex workflow's queue (``queue:WW`` + 32 hex digits)."""
    return bool(target) and re.fullmatch(r"queue:WW[0-9a-fA-F]{32}", target) is not None


def _tried(session: Session, conversation_id: int) -> set[str]:
    """The targets of the handovers since control last left the bot."""
    tried: set[str] = set()
    for event in reversed(events(session, conversation_id)):
        if event.kind != "handover":
            break
        tried.add(event.target)
    return tried


def expire_due_handovers(
    session: Session,
    now: dt.datetime,
    settings: Settings,
    send: Callable[[Sequence[int]], object],
) -> tuple[int, list[int]]:
    """`expire_handovers` with the app's settings, sending what it stored (the clock runs it).

    Args:
        session: The session.
        now: The time to expire up to.
        settings: The app's settings (``HANDOVER_CONFIRM_SECONDS``,
            ``HANDOVER_EXPIRED_MESSAGE``, ``HANDOVER_EXPIRED_TO``).
        send: Sends stored outbound messages through the Twilio REST API
            (`delivery.outbound.send_stored` with the app's sender).

    Returns:
        How many handovers were given back, and the message ids sent.
    """
    expired, ids = expire_handovers(
        session,
        now,
        settings.handover_confirm_seconds,
        settings.handover_expired_message,
        pick=next_available if settings.handover_expired_to == "next_agent" else None,
    )
    if ids:
        send(ids)
    return expired, ids
