"""A contact's turns are serialised: quick messages never race each other."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import sqlalchemy as sa

from models import Execution, Message, db
from tests.conftest import TwilioWebhook
from tests.twiml import messages_of


def test_simultaneous_first_messages_start_one_execution(app, fake_openai):
    fake_openai.default_reply = {"reply": "Tell me more.", "goal": "", "agreed": False}
    webhooks = [TwilioWebhook(app.test_client()) for _ in range(6)]
    forms = [webhook.form(f"hello {index}") for index, webhook in enumerate(webhooks)]

    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(TwilioWebhook.post, webhooks, forms))

    assert [response.status_code for response in responses] == [200] * 6
    assert all(messages_of(response.data) for response in responses), "a contact went unanswered"
    with app.app_context():
        executions = db.session.scalars(sa.select(Execution)).all()
        assert len(executions) == 1, [(e.flow_id, e.status) for e in executions]
        turn_statuses = db.session.scalars(
            sa.select(Message.turn_status).where(Message.direction == "inbound")
        ).all()
        assert sorted(turn_statuses) == ["done"] * 6
        greetings = db.session.scalar(
            sa.select(sa.func.count()).where(Message.step_id == "welcome")
        )
        assert greetings == 1


def test_different_contacts_run_side_by_side(app):
    webhooks = [TwilioWebhook(app.test_client()) for _ in range(5)]
    senders = [f"whatsapp:+1555123{index:04d}" for index in range(5)]

    with ThreadPoolExecutor(max_workers=5) as pool:
        responses = list(pool.map(TwilioWebhook.say, webhooks, ["hello"] * 5, senders))

    assert all(len(messages_of(response.data)) == 2 for response in responses)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Execution)) == 5
