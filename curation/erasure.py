"""A contact's "delete my data": erase their messages, executions and curation.

Two ways in: the contact texts the keyword (``DELETE_KEYWORD``, default
``delete my data``), answered by the `delete_my_data` responder before the flow
runs; or an admin presses the button in the console. Either way an
`AuditEvent` ``contact.erase`` records who asked, when, and how many rows went
(never the phone number or any text).

The keyword path keeps the contact row, their conversations (empty but for the
request and the confirmation, which the turn stores after the responder) and
nothing else; the admin path deletes the contact itself, and the database's
``ON DELETE CASCADE`` takes everything that hangs off it.
"""

from __future__ import annotations

import logging
import unicodedata

import sqlalchemy as sa
from sqlalchemy.orm import Session

from conversation.turn import Responder
from engine.ports import Contact as EngineContact
from models.curation import AuditEvent, ConversationTag, Curation, RedactedMessage
from models.entities import Contact, Conversation, Execution, Message, utcnow

log = logging.getLogger("parley.erasure")

CONFIRMATION = (
    "Done: we deleted your messages and everything we kept about our conversations. "
    "Text us again any time to start afresh."
)


def _normal(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).casefold()
    return " ".join("".join(c for c in folded if c.isalnum() or c.isspace()).split())


def erase(
    session: Session, contact_id: int, actor: str, *, keep_message_id: int | None = None
) -> dict[str, int]:
    """Erase a contact's messages, executions and curation; the caller commits.

    Args:
        session: The SQLAlchemy session.
        contact_id: The contact.
        actor: Who asked: ``contact:<id>`` or a console user's e-mail.
        keep_message_id: The keyword path: keep this message (the request),
            the contact row and its conversations, where the turn still stores
            its answer. None: delete the contact too.

    Returns:
        How many rows went: ``{"messages", "executions", "conversations"}``.
    """
    conversations = sa.select(Conversation.id).where(Conversation.contact_id == contact_id)
    messages = [Message.contact_id == contact_id]
    if keep_message_id is not None:
        messages.append(Message.id != keep_message_id)
    counts = {
        "messages": session.scalar(sa.select(sa.func.count()).where(*messages)) or 0,
        "executions": session.scalar(
            sa.select(sa.func.count()).where(Execution.contact_id == contact_id)
        )
        or 0,
        "conversations": session.scalar(
            sa.select(sa.func.count()).where(Conversation.contact_id == contact_id)
        )
        or 0,
    }
    # Explicit deletes, not only cascades: SQLite enforces ON DELETE only with
    # foreign keys on, and the keyword path keeps the contact.
    for model in (RedactedMessage, ConversationTag, Curation):
        session.execute(sa.delete(model).where(model.conversation_id.in_(conversations)))
    session.execute(sa.delete(Message).where(*messages))
    session.execute(sa.delete(Execution).where(Execution.contact_id == contact_id))
    if keep_message_id is not None:
        session.execute(sa.update(Contact).where(Contact.id == contact_id).values(name=None))
        counts["conversations"] = 0
    else:
        session.execute(sa.delete(Conversation).where(Conversation.contact_id == contact_id))
        session.execute(sa.delete(Contact).where(Contact.id == contact_id))
    session.add(
        AuditEvent(
            actor=actor, action="contact.erase", contact_id=contact_id, detail=counts, at=utcnow()
        )
    )
    log.info("contact.erase contact=%s by=%s counts=%s", contact_id, actor, counts)
    return counts


def delete_my_data(session: Session, keyword: str) -> Responder:
    """The responder for `keyword` (``DELETE_KEYWORD``; case, accents, punctuation ignored).

    The contact's earlier messages go; the request itself was stored before the
    responder ran and stays, with the confirmation, as the record the contact
    sees.
    """
    keyword = _normal(keyword)

    def respond(contact: EngineContact, text: str) -> list[str] | None:
        if _normal(text) != keyword:
            return None
        latest = session.scalar(
            sa.select(sa.func.max(Message.id)).where(
                Message.contact_id == contact.id, Message.direction == "inbound"
            )
        )
        erase(session, contact.id, f"contact:{contact.id}", keep_message_id=latest)
        return [CONFIRMATION]

    return respond
