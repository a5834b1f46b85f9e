"""The agents' transcript: messages and control events of a conversation, in order."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from handover.control import events
from models.entities import Message, as_utc


@dataclass(frozen=True)
class Entry:
    """One line of the agents' transcript: a message or a control event.

    Attributes:
        id: ``m<id>`` or ``e<id>`` (unique across both).
        kind: ``message`` or the control event's kind.
        author: The message's author, or the event's actor.
        text: The message body, or a sentence about the event.
        direction: ``inbound``, ``outbound`` or ``system``.
        status: The message's delivery status (empty for events).
        created_at: When.
        error_code: Twilio's error code, when the message failed.
    """

    id: str
    kind: str
    author: str
    text: str
    direction: str
    status: str
    created_at: dt.datetime
    error_code: int | None = None

    def as_json(self) -> dict[str, Any]:
        """For the inbox's polling."""
        return {
            "id": self.id,
            "kind": self.kind,
            "author": self.author,
            "text": self.text,
            "direction": self.direction,
            "status": self.status,
            "created_at": as_utc(self.created_at).isoformat(),
            "error_code": self.error_code,
        }


def _text(row: Message) -> str:
    """The message's body, and a voice note's transcript (conversation/voice.py) after it."""
    heard = (row.media or {}).get("transcript") or {}
    if heard.get("text"):
        return f"{row.body}\n(voice note) {heard['text']}".strip()
    if heard.get("error"):
        return f"{row.body}\n(voice note, not transcribed)".strip()
    return row.body


_EVENT_TEXT = {
    "handover": "{actor} handed over to {target}",
    "handover_confirmed": "{actor} accepted the handover",
    "takeover": "{actor} took over",
    "handback": "{actor} handed back to the bot",
    "handover_expired": "nobody accepted in time: back to the bot",
}


def transcript(
    session: Session, conversation_id: int, name: Callable[[str], str] | None = None
) -> list[Entry]:
    """Messages and control events of a conversation, in the order they happened.

    Args:
        session: The SQLAlchemy session.
        conversation_id: The conversation.
        name: How to write an actor or target (``agent:3``, ``queue:support``)
            in an event's sentence; as stored when None.
    """
    name = name or (lambda who: who)
    entries = [
        Entry(
            f"m{row.id}",
            "message",
            row.author,
            _text(row),
            row.direction,
            row.status,
            row.created_at,
            row.error_code,
        )
        for row in session.scalars(
            sa.select(Message).where(Message.conversation_id == conversation_id)
        )
    ]
    for event in events(session, conversation_id):
        text = _EVENT_TEXT.get(event.kind, event.kind).format(
            actor=name(event.actor), target=name(event.target)
        )
        if event.kind == "handback" and (event.details or {}).get("step"):
            text += f" at step {event.details['step']}"
        entries.append(
            Entry(f"e{event.id}", event.kind, event.actor, text, "system", "", event.created_at)
        )
    return sorted(entries, key=lambda entry: (as_utc(entry.created_at), entry.id))
