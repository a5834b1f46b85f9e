"""No bot message is sent between a takeover and the handback, even one already queued.

Turns queued on Redis and run by the dispatcher in the test process
(`tasks.dispatcher`), as in tests/test_delivery.py, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from handover.control import agent_message, handback, takeover
from models import Conversation, Message, db
from tasks import dispatcher
from tests.delivery_support import FLOWS, redis_or_skip

ANA = "whatsapp:+15551230001"


@pytest.fixture
def app_config(app_config):
    """The echo flows, turns queued on the tests' Redis database."""
    return {
        **app_config,
        "FLOWS_DIR": str(FLOWS),
        "REDIS_URL": redis_or_skip(),
        "TWILIO_RETRY_BACKOFF": "0.01",
        "TWILIO_SEND_DEADLINE": "5",
    }


def in_context(app, action, *args):
    with app.app_context():
        result = action(db.session, *args)
        db.session.commit()
        db.session.remove()
        return result


def cid(app) -> int:
    with app.app_context():
        return db.session.scalars(sa.select(Conversation.id)).one()


def contact_id(app) -> int:
    with app.app_context():
        return db.session.scalars(sa.select(Conversation.contact_id)).one()


def outbound(app) -> list[tuple[str, str, str]]:
    with app.app_context():
        rows = db.session.execute(
            sa.select(Message.author, Message.body, Message.status)
            .where(Message.direction == "outbound")
            .order_by(Message.id)
        ).all()
        return [tuple(row) for row in rows]


def test_queued_turns_and_sends_stay_silent_after_a_takeover(app, twilio, fake_twilio):
    twilio.say("m0", sender=ANA)
    twilio.say("m1", sender=ANA)
    who = contact_id(app)
    with app.app_context():
        # A worker ran m0's turn but has not sent its reply yet...
        assert dispatcher().run_next_turn(who) == "ran"
        db.session.remove()
    # ...when the agent takes over; m1's turn is still queued.
    in_context(app, takeover, cid(app), 7)
    with app.app_context():
        assert dispatcher().drain(who)
        db.session.remove()
    assert fake_twilio.requests == []

    with app.app_context():
        message_id = agent_message(db.session, cid(app), "agent:7", "Sam here.")
        db.session.commit()
        app.extensions["parley"].send_stored([message_id], db.session)
        db.session.remove()
    in_context(app, handback, cid(app), "agent:7")
    with app.app_context():  # a sweep after the handback sends nothing held back
        assert dispatcher().drain(who)
        db.session.remove()
    twilio.say("m2", sender=ANA)
    with app.app_context():
        assert dispatcher().drain(who)
        db.session.remove()

    assert fake_twilio.bodies == ["Sam here.", "got m2"]
    assert outbound(app) == [
        ("bot", "got m0", "canceled"),
        ("agent:7", "Sam here.", "queued"),
        ("bot", "got m2", "queued"),
    ]
    with app.app_context():
        statuses = db.session.scalars(
            sa.select(Message.turn_status)
            .where(Message.direction == "inbound")
            .order_by(Message.id)
        ).all()
    assert statuses == ["done", "skipped", "done"]
