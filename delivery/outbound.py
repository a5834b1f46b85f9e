"""Sending stored outbound messages through the Twilio REST API.

Used when Parley speaks outside a webhook's TwiML answer (after a payment, a
timer). Messages are stored before they are sent, so a send that fails is
still in the transcript, marked ``failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.orm import Session

from config import Settings, reveal
from delivery.optout import cancel_opted_out
from integrations.twilio import TwilioSender
from models import Message

if TYPE_CHECKING:
    from delivery.outbox import Settings as OutboxSettings

log = logging.getLogger("parley.outbound")


def contact_address(channel: str, phone: str) -> str:
    """The address Twilio sends to: ``whatsapp:+1555…`` on WhatsApp, ``+1555…`` on SMS."""
    return f"whatsapp:{phone}" if channel == "whatsapp" else phone


def rest_sender(settings: Settings) -> TwilioSender | None:
    """A Twilio REST sender, or None without ``TWILIO_ACCOUNT_SID``/``TWILIO_AUTH_TOKEN``.

    Args:
        settings: The app's settings.
    """
    sid, token = settings.twilio_account_sid, reveal(settings.twilio_auth_token)
    if not (sid and token):
        return None
    return TwilioSender(sid, token, api_base_url=settings.twilio_api_base)


@contextmanager
def twilio_sender(settings: Settings) -> Iterator[TwilioSender | None]:
    """`rest_sender` for a block of sends, closed at its end.

    Args:
        settings: The app's settings.
    """
    sender = rest_sender(settings)
    try:
        yield sender
    finally:
        if sender is not None:
            sender.close()


def send_stored(
    session: Session,
    sender: TwilioSender | None,
    message_ids: Sequence[int],
    settings: OutboxSettings,
) -> int:
    """Send stored outbound messages in order, each at most once, and record the outcome.

    Each send is recorded before and after the REST call, retried on Twilio
    429/5xx, and follows WhatsApp's 24-hour window (a step's template outside
    it, or "not sent: outside the 24-hour window"): see `delivery.outbox`.

    Args:
        session: The session; committed after each message.
        sender: The Twilio sender, or None when Twilio is not configured
            (every message is then marked failed).
        message_ids: Outbound message ids, in the order to send them.
        settings: How sends are made and retried (the container's ``delivery``).

    Returns:
        How many were accepted by Twilio.
    """
    from delivery.outbox import Outbox  # it sends through this module's helpers

    message_ids = cancel_opted_out(session, message_ids)  # STOP: nothing goes out
    Outbox(session, sender, settings).send_messages(message_ids)
    return (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(Message)
            .where(Message.id.in_(list(message_ids)), Message.message_sid.is_not(None))
        )
        or 0
    )
