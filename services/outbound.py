"""Sending stored outbound messages through the Twilio REST API.

Used when Parley speaks outside a webhook's TwiML answer (after a payment, for
example). Messages are stored before they are sent, so a send that fails is
still in the transcript, marked ``failed``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session
from twilio.base.exceptions import TwilioException

from integrations.twilio import TwilioSender
from models import Contact, Conversation, Message

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


def send_stored(session: Session, sender: TwilioSender | None, message_ids: Sequence[int]) -> int:
    """Send stored outbound messages in order; record each ``MessageSid`` or the failure.

    Args:
        session: The session; committed after each message.
        sender: The Twilio sender, or None when Twilio is not configured
            (every message is then marked failed).
        message_ids: Outbound message ids, in the order to send them.

    Returns:
        How many were accepted by Twilio.
    """
    sent = 0
    for message_id in message_ids:
        row = session.execute(
            sa.select(Message, Conversation, Contact)
            .join(Conversation, Message.conversation_id == Conversation.id)
            .join(Contact, Message.contact_id == Contact.id)
            .where(Message.id == message_id)
        ).one()
        message, conversation, contact = row
        if sender is None:
            log.error("outbound.unconfigured message=%s: set TWILIO_ACCOUNT_SID", message.id)
            message.status = "failed"
        else:
            try:
                message.message_sid = sender.send(
                    conversation.address,
                    contact_address(conversation.channel, contact.phone),
                    message.body,
                )
                sent += 1
            except TwilioException as error:
                log.error("outbound.failed message=%s reason=%s", message.id, error)
                message.status = "failed"
        session.commit()
    return sent
