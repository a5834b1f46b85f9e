"""An inbound message before its turn: what it is, and storing it first (step 2 of a turn)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from engine.ports import Channel, InboundMessage
from models.store import SqlStore, StoredInbound


@dataclass(frozen=True)
class Incoming:
    """An inbound message from any channel, before it is stored.

    Attributes:
        phone: The contact's E.164 number.
        channel: ``whatsapp`` or ``sms``.
        address: Our side of the conversation (Twilio's ``To``).
        body: The text as typed.
        message_sid: Twilio's ``MessageSid``, or a local unique id.
        name: WhatsApp ``ProfileName``, if any.
        media: Media URLs.
        media_types: Their content types, same order.
        button: The WhatsApp button tapped (``{"payload", "text"}``), or None.
        location: The shared location (``{"latitude", "longitude", ...}``), or None.
    """

    phone: str
    channel: Channel
    address: str
    body: str
    message_sid: str
    name: str | None = None
    media: tuple[str, ...] = ()
    media_types: tuple[str, ...] = ()
    button: dict[str, str] | None = None
    location: dict[str, Any] | None = None

    def as_inbound(self) -> InboundMessage:
        """The engine's view of the message (``input`` in templates)."""
        return InboundMessage(
            text=self.body,
            channel=self.channel,
            message_sid=self.message_sid,
            media=self.media,
            media_types=self.media_types,
            button=self.button,
            location=self.location,
            to=self.address,
        )


def store_incoming(session: Session, incoming: Incoming) -> StoredInbound | None:
    """Store an inbound message at once, keyed by ``MessageSid``.

    The webhook's whole database work when turns are queued: for a known
    contact, a SELECT and an INSERT (`SqlStore.store_inbound`). On PostgreSQL
    they run in autocommit, each statement its own transaction, which saves
    the BEGIN and COMMIT round trips: the INSERT is the one write and is
    atomic on its own, and a new contact's or conversation's row is an
    idempotent upsert. SQLite keeps one transaction (its BEGIN IMMEDIATE).

    Returns:
        The stored ids, or None for a ``MessageSid`` already stored.

    Raises:
        sqlalchemy.exc.OperationalError: the database is unreachable (nothing
            was stored).
    """
    fields = {
        "phone": incoming.phone,
        "name": incoming.name,
        "channel": incoming.channel,
        "address": incoming.address,
        "body": incoming.body,
        "message_sid": incoming.message_sid,
        "media": incoming.media,
        "details": _details(incoming),
    }
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            return SqlStore(connection).store_inbound(**fields)
    try:
        stored = SqlStore(session).store_inbound(**fields)
    except Exception:
        session.rollback()
        raise
    session.commit()
    return stored


def _details(incoming: Incoming) -> dict[str, Any]:
    """What the inbound row keeps besides media URLs (content types, button, location)."""
    details: dict[str, Any] = {}
    if incoming.media_types:
        details["types"] = list(incoming.media_types)
    if incoming.button:
        details["button"] = dict(incoming.button)
    if incoming.location:
        details["location"] = dict(incoming.location)
    return details
