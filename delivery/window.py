"""WhatsApp's 24-hour customer-service window: when a free-form message may go out.

WhatsApp accepts a free-form message only within 24 hours of the contact's last
message; outside it only an approved template (Twilio error 63016 otherwise;
https://www.twilio.com/docs/whatsapp/key-concepts#the-24-hour-window-or-24-hour-session).
Every path that sends checks it here: the outbox (a step's ``template`` instead,
or the message recorded ``failed``) and an agent's reply from the inbox.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Message
from models.entities import as_utc, utcnow

#: WhatsApp's customer-service window: free-form messages only within 24 hours
#: of the contact's last message (Twilio error 63016 otherwise;
#: https://www.twilio.com/docs/whatsapp/key-concepts#the-24-hour-window-or-24-hour-session).
SERVICE_WINDOW = dt.timedelta(hours=24)

#: Why a message outside the window without a template was not sent.
OUTSIDE_WINDOW = "not sent: outside the 24-hour window"


def window_open(session: Session, conversation_id: int, now: dt.datetime | None = None) -> bool:
    """Whether the conversation's WhatsApp 24-hour customer-service window is open.

    The window opens with each message the contact sends and lasts 24 hours.
    """
    last = session.scalar(
        sa.select(sa.func.max(Message.created_at)).where(
            Message.conversation_id == conversation_id, Message.direction == "inbound"
        )
    )
    return within_window(last, now or utcnow())


def within_window(last_inbound_at: dt.datetime | None, now: dt.datetime) -> bool:
    """`window_open` given the time of the contact's last message (None: never wrote)."""
    return last_inbound_at is not None and now - as_utc(last_inbound_at) < SERVICE_WINDOW
