"""Sending stored outbound messages through the Twilio REST API.

Used when Parley speaks outside a webhook's TwiML answer (after a payment, a
timer). Messages are stored before they are sent, so a send that fails is
still in the transcript, marked ``failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from flask import current_app, has_app_context
from sqlalchemy.orm import Session

from delivery.optout import cancel_opted_out
from integrations.twilio import TwilioSender
from models import Message

log = logging.getLogger("parley.outbound")


def contact_address(channel: str, phone: str) -> str:
    """The address Twilio sends to: ``whatsapp:+1555…`` on WhatsApp, ``+1555…`` on SMS."""
    return f"whatsapp:{phone}" if channel == "whatsapp" else phone


def sender_from_config(config: Mapping[str, Any]) -> TwilioSender | None:
    """A Twilio REST sender, or None without ``TWILIO_ACCOUNT_SID``/``TWILIO_AUTH_TOKEN``."""
    sid, token = config.get("TWILIO_ACCOUNT_SID"), config.get("TWILIO_AUTH_TOKEN")
    if not (sid and token):
        return None
    return TwilioSender(sid, token, api_base_url=config.get("TWILIO_API_BASE"))


@contextmanager
def twilio_sender(config: Mapping[str, Any]) -> Iterator[TwilioSender | None]:
    """`sender_from_config` for a block of sends, closed at its end."""
    sender = sender_from_config(config)
    try:
        yield sender
    finally:
        if sender is not None:
            sender.close()


def send_stored(session: Session, sender: TwilioSender | None, message_ids: Sequence[int]) -> int:
    """Send stored outbound messages in order, each at most once, and record the outcome.

    Each send is recorded before and after the REST call, retried on Twilio
    429/5xx, and follows WhatsApp's 24-hour window (a step's template outside
    it, or "not sent: outside the 24-hour window"): see `delivery.outbox`.

    Args:
        session: The session; committed after each message.
        sender: The Twilio sender, or None when Twilio is not configured
            (every message is then marked failed).
        message_ids: Outbound message ids, in the order to send them.

    Returns:
        How many were accepted by Twilio.
    """
    from delivery.outbox import Outbox, Settings  # it sends through this module's helpers

    message_ids = cancel_opted_out(session, message_ids)  # STOP: nothing goes out
    config = current_app.config if has_app_context() else {}
    Outbox(session, sender, Settings.from_config(config)).send_messages(message_ids)
    return (
        session.scalar(
            sa.select(sa.func.count())
            .select_from(Message)
            .where(Message.id.in_(list(message_ids)), Message.message_sid.is_not(None))
        )
        or 0
    )
