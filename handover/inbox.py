"""The agents' inbox, read from the database: the lists, a conversation's panel and its chat.

The console's inbox pages (web/admin/inbox.py) only parse the request, call
these and render what they return; every query of the inbox is here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from curation.users import active_users, display_names
from delivery.window import window_open
from handover import control as handover
from handover.transcript import Entry, transcript
from integrations.twilio_errors import describe
from models.billing import Entitlement
from models.curation import User
from models.delivery import Delivery
from models.entities import Contact, Conversation, Execution, Message, as_utc
from models.handover import AgentPresence

#: The inbox's lists: handovers nobody accepted yet, mine, all away from the bot.
VIEWS = ("waiting", "mine", "all")

#: What each delivery status reads as in the chat, and its CSS class.
STATUS_LABELS: dict[str, tuple[str, str]] = {
    "received": ("received", "ok"),
    "pending": ("sending", "pending"),
    "unknown": ("sending", "pending"),
    "accepted": ("sending", "pending"),
    "scheduled": ("scheduled", "pending"),
    "queued": ("queued", "pending"),
    "sending": ("sending", "pending"),
    "sent": ("sent", "ok"),
    "delivered": ("delivered", "ok"),
    "read": ("read", "ok"),
    "failed": ("failed", "failed"),
    "undelivered": ("not delivered", "failed"),
    "canceled": ("not sent", "muted"),
    "simulated": ("simulated", "muted"),
}


@dataclass(frozen=True)
class InboxRow:
    """One conversation in an inbox list.

    Attributes:
        conversation: The conversation.
        contact: Its contact.
        control: Who has it now.
        holder: Who has it, as the console shows them (a name, a queue).
    """

    conversation: Conversation
    contact: Contact
    control: handover.Control
    holder: str


@dataclass(frozen=True)
class ChatLine:
    """One line of the inbox's chat: a message bubble or a control event.

    Attributes:
        id: ``m<id>`` or ``e<id>``.
        side: ``contact`` (left), ``us`` (right: bot, agents, system) or ``event`` (centred).
        author: Who wrote it, by name (the contact's name, an agent's name, "Bot").
        author_kind: ``contact``, ``bot``, ``agent`` or ``system``.
        text: The message, or a sentence about the event.
        at: When, in UTC.
        status: The delivery status as stored (empty for events and inbound messages).
        status_label: The status in words ("sent", "failed", "simulated").
        status_class: ``ok``, ``pending``, ``failed`` or ``muted``.
        error: Twilio's error in words, when the message failed with a code.
    """

    id: str
    side: str
    author: str
    author_kind: str
    text: str
    at: dt.datetime
    status: str
    status_label: str
    status_class: str
    error: str

    @property
    def failed(self) -> bool:
        """Whether the message did not reach the contact."""
        return self.status_class == "failed"

    def as_json(self) -> dict[str, Any]:
        """For the inbox's polling."""
        return {
            "id": self.id,
            "side": self.side,
            "author": self.author,
            "author_kind": self.author_kind,
            "text": self.text,
            "at": self.at.isoformat(),
            "time": self.at.strftime("%H:%M"),
            "status": self.status,
            "status_label": self.status_label,
            "status_class": self.status_class,
            "error": self.error,
        }


class Names:
    """How the inbox writes who did something: agents by name, queues and the bot in words.

    Args:
        users: Each console user's id and display name.
        contact: The contact's name, when known.
    """

    def __init__(self, users: dict[int, str], contact: str | None = None) -> None:
        self.users = users
        self.contact = contact

    def __call__(self, who: str) -> str:
        """``agent:3`` → ``Sam Lee``, ``queue:support`` → ``the support queue``, ``bot`` → Bot."""
        kind, _, rest = who.partition(":")
        if kind == "agent" and rest.isdigit():
            return self.users.get(int(rest), f"agent {rest} (removed)")
        if kind == "queue":
            return f"the {rest} queue"
        if who == "contact":
            return self.contact or "Contact"
        return {"bot": "Bot", "system": "System"}.get(who, who)


def names(session: Session, contact: Contact | None = None) -> Names:
    """The `Names` of the console's users (and `contact`)."""
    return Names(display_names(session), contact.name if contact else None)


def rows(session: Session, view: str, me: str) -> list[InboxRow]:
    """The conversations of an inbox list, most recent first (at most 200).

    Args:
        session: The SQLAlchemy session.
        view: One of `VIEWS`.
        me: The agent asking (``agent:<id>``), for ``mine``.
    """
    query = (
        sa.select(Conversation, Contact)
        .join(Contact, Contact.id == Conversation.contact_id)
        .order_by(Conversation.last_message_at.desc())
        .limit(200)
    )
    if view == "mine":
        query = query.where(Conversation.controlled_by == me)
    else:
        query = query.where(Conversation.controlled_by != handover.BOT)
    who = names(session)
    found = []
    for conversation, contact in session.execute(query).all():
        state = handover.control(session, conversation.id)
        if view == "waiting" and not state.pending:
            continue
        found.append(InboxRow(conversation, contact, state, who(state.controlled_by)))
    return found


def is_available(session: Session, user_id: int) -> bool:
    """Whether the agent said they are available for ``handover: available`` steps."""
    presence = session.get(AgentPresence, user_id)
    return bool(presence and presence.available)


def conversation(session: Session, conversation_id: int) -> Conversation | None:
    """The conversation, or None."""
    return session.get(Conversation, conversation_id)


@dataclass(frozen=True)
class Panel:
    """Everything the inbox shows beside a conversation's chat.

    Attributes:
        conversation: The conversation.
        contact: Its contact.
        execution: The contact's latest execution, if any.
        entitlement: The contact's entitlement status (``none`` without one).
        control: Who has the conversation.
        holder: Who has it, by name.
        agents: Other active users it can be transferred to.
        window_open: Whether a free-form reply may be sent (WhatsApp's 24-hour window).
    """

    conversation: Conversation
    contact: Contact
    execution: Execution | None
    entitlement: str
    control: handover.Control
    holder: str
    agents: list[User]
    window_open: bool


def panel(session: Session, row: Conversation, user_id: int) -> Panel:
    """The contact's profile and the conversation's control, for `user_id`'s page."""
    contact = session.get_one(Contact, row.contact_id)
    execution = session.scalars(
        sa.select(Execution)
        .where(Execution.contact_id == contact.id)
        .order_by(Execution.id.desc())
        .limit(1)
    ).first()
    entitlement = session.scalars(
        sa.select(Entitlement.status).where(Entitlement.contact_id == contact.id)
    ).first()
    state = handover.control(session, row.id)
    return Panel(
        conversation=row,
        contact=contact,
        execution=execution,
        entitlement=entitlement or "none",
        control=state,
        holder=names(session, contact)(state.controlled_by),
        agents=active_users(session, excluding=user_id),
        window_open=row.channel != "whatsapp" or window_open(session, row.id),
    )


def _line(entry: Entry, who: Names) -> ChatLine:
    if entry.kind != "message":
        side = "event"
    else:
        side = "contact" if entry.direction == "inbound" else "us"
    status = entry.status if side == "us" else ""
    label, css = STATUS_LABELS.get(status, (status, "muted")) if status else ("", "")
    return ChatLine(
        id=entry.id,
        side=side,
        author=who(entry.author),
        author_kind=entry.author.partition(":")[0] if side != "event" else "system",
        text=entry.text,
        at=as_utc(entry.created_at),
        status=status,
        status_label=label,
        status_class=css,
        error=describe(entry.error_code) if css == "failed" else "",
    )


def chat(session: Session, conversation_id: int) -> list[ChatLine]:
    """The conversation as the inbox's chat: messages and control events, in order."""
    contact = session.scalars(
        sa.select(Contact)
        .join(Conversation, Conversation.contact_id == Contact.id)
        .where(Conversation.id == conversation_id)
    ).first()
    who = names(session, contact)
    return [_line(entry, who) for entry in transcript(session, conversation_id, name=who)]


@dataclass(frozen=True)
class SendOutcome:
    """What became of messages an agent just sent.

    Attributes:
        sent: How many Twilio accepted.
        failed: How many failed, and why (Twilio's error in words, or the reason stored).
    """

    sent: int
    failed: list[str]


def send_outcome(session: Session, message_ids: list[int]) -> SendOutcome:
    """Read back the stored status of messages after a send (the flash says what happened)."""
    if not message_ids:
        return SendOutcome(0, [])
    found = session.execute(
        sa.select(Message.status, Message.error_code, Delivery.error)
        .outerjoin(Delivery, Delivery.message_id == Message.id)
        .where(Message.id.in_(message_ids))
    ).all()
    failed = []
    sent = 0
    for status, error_code, reason in found:
        css = STATUS_LABELS.get(status, ("", "muted"))[1]
        if css == "failed" or status == "canceled":
            failed.append(describe(error_code) or reason or f"status {status}")
        else:
            sent += 1
    return SendOutcome(sent, failed)
