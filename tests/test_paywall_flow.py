"""The paywall end to end: Twilio webhook, Stripe webhook, Twilio REST, one database."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from models import Execution, Message, db
from tests.stripe_events import (
    PAYMENT_LINK_URL,
    StripeWebhook,
    event,
    stripe_settings,
    subscription,
)
from tests.twiml import messages_of

SENDER = "whatsapp:+15551230001"
LINK = f"{PAYMENT_LINK_URL}?client_reference_id=15551230001"
GREETING = "Hi Ana! I'm Parley, your well-being companion. Let's pick one small goal for this week."
QUESTION = "Which matters most to you right now: 1. sleep, 2. movement or 3. connection?"
WELCOME_BACK = "Thanks, your subscription is active! Let's carry on."


@pytest.fixture
def app_config(app_config):
    """A paywalled deployment selling through a Payment Link."""
    app_config.update(
        stripe_settings(STRIPE_PRICE_ID=None, STRIPE_PAYMENT_LINK_URL=PAYMENT_LINK_URL),
        PAYWALL_ENABLED="on",
    )
    return app_config


def pay(client, created: int, status: str = "active", kind: str = "created") -> None:
    """Stripe tells Parley about the contact's subscription."""
    stripe = StripeWebhook(client)
    sub = subscription("sub_ana", "cus_ana", status, created + 30 * 86400)
    if kind == "created":
        checkout = {
            "id": "cs_test_ana",
            "object": "checkout.session",
            "client_reference_id": "15551230001",
            "customer": "cus_ana",
            "customer_details": {"email": None, "phone": None},
            "mode": "subscription",
            "payment_status": "paid",
            "status": "complete",
            "subscription": "sub_ana",
        }
        assert (
            stripe.post(event("checkout.session.completed", checkout, created=created)).status_code
            == 200
        )
    response = stripe.post(event(f"customer.subscription.{kind}", sub, created=created + 1))
    assert response.status_code == 200, response.data


def test_paying_unlocks_the_flow_and_resumes_where_it_stopped(app, client, twilio, fake_twilio):
    first = twilio.say("hello", sender=SENDER, ProfileName="Ana")
    assert messages_of(first.data) == [f"To carry on, please subscribe here: {LINK}"]

    again = twilio.say("hello?", sender=SENDER, ProfileName="Ana")
    assert messages_of(again.data) == [
        "Your payment link is in my earlier message. Once you've paid, we'll carry on right here."
    ]
    assert fake_twilio.requests == []

    pay(client, created=int(time.time()))

    assert fake_twilio.bodies == [WELCOME_BACK, GREETING, QUESTION]
    assert {request["form"]["To"] for request in fake_twilio.requests} == {SENDER}
    assert {request["form"]["From"] for request in fake_twilio.requests} == {
        "whatsapp:+14155238886"
    }
    with app.app_context():
        execution = db.session.scalars(sa.select(Execution)).one()
        assert (execution.status, execution.current_step) == ("waiting", "area")
        sent = db.session.scalars(sa.select(Message).where(Message.body == QUESTION)).one()
        assert sent.message_sid.startswith("SM") and sent.status == "queued"

    reply = twilio.say("3", sender=SENDER, ProfileName="Ana")
    assert reply.status_code == 200
    with app.app_context():
        execution = db.session.scalars(sa.select(Execution)).one()
        assert execution.variables["area"] == "connection"


def test_cancellation_locks_the_flow_again(app, client, twilio, fake_twilio):
    now = int(time.time())
    pay(client, created=now)
    assert messages_of(twilio.say("hello", sender=SENDER, ProfileName="Ana").data) == [
        GREETING,
        QUESTION,
    ]

    pay(client, created=now + 10, status="canceled", kind="deleted")
    locked = twilio.say("sleep", sender=SENDER, ProfileName="Ana")

    assert messages_of(locked.data) == [f"To carry on, please subscribe here: {LINK}"]


def test_switching_the_paywall_off_at_runtime_applies_to_the_next_turn(app, twilio):
    assert messages_of(twilio.say("hello", sender=SENDER).data) == [
        f"To carry on, please subscribe here: {LINK}"
    ]
    runner = app.test_cli_runner()
    assert runner.invoke(args=["paywall", "off", "--by", "admin@example.org"]).exit_code == 0

    opened = twilio.say("hello", sender=SENDER, ProfileName="Ana")

    assert messages_of(opened.data) == [WELCOME_BACK, GREETING, QUESTION]


def test_the_billing_keyword_answers_with_the_portal_or_says_there_is_none(app, twilio):
    response = twilio.say("Billing", sender=SENDER)

    assert messages_of(response.data) == ["You don't have a subscription with us yet."]
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Execution)) == 0


def test_switching_the_paywall_on_at_runtime_applies_to_the_next_turn(app, twilio):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["paywall", "off", "--by", "admin@example.org"]).exit_code == 0
    assert messages_of(twilio.say("hello", sender=SENDER, ProfileName="Ana").data) == [
        GREETING,
        QUESTION,
    ]

    result = runner.invoke(args=["paywall", "on", "--by", "admin@example.org"])
    assert result.exit_code == 0, result.output
    locked = twilio.say("sleep", sender=SENDER, ProfileName="Ana")

    assert messages_of(locked.data) == [f"To carry on, please subscribe here: {LINK}"]
