"""The designer's quality loop (issue 16): a real conversation becomes a conversation test.

A conversation runs through the signed webhook with the model answering from
the fake OpenAI server; it is saved as a test (CLI and console), the test
passes at once, fails with a turn-by-turn diff after a change to the flow, and
holds none of the contact's private details.
"""

from __future__ import annotations

import sqlalchemy as sa

from models import Message, db

PHONE = "+15551230001"
COACH = [
    {"reply": "Movement it is! What kind of moving do you enjoy?", "goal": "", "agreed": False},
    {
        "reply": "How about a 10-minute walk after lunch?",
        "goal": "a 10-minute walk after lunch",
        "agreed": False,
    },
]


def test_each_turn_keeps_the_model_calls_it_made(app, twilio, fake_openai):
    fake_openai.script(COACH[0])
    twilio.say("hello", ProfileName="Ana")
    twilio.say("2")

    with app.app_context():
        inbound = db.session.scalars(
            sa.select(Message).where(Message.direction == "inbound").order_by(Message.id)
        ).all()
        assert [m.llm_calls for m in inbound] == [None, [{"step": "coach", "output": COACH[0]}]]
