"""``POST /studio/entitlement``: what a Twilio Studio flow branches on, behind STUDIO_TOKEN."""

from __future__ import annotations

import pytest

from app import create_app
from models import db
from models.store import SqlStore
from tests.stripe_events import (
    StripeWebhook,
    checkout_session,
    event,
    stripe_settings,
    subscription,
)

TOKEN = "studio-token-9c1e5b7d"
PHONE = "+15551230001"
T0 = 1_760_000_000


@pytest.fixture
def app_config(app_config: dict) -> dict:
    app_config.update(stripe_settings(PAYWALL_ENABLED="1", STUDIO_TOKEN=TOKEN))
    return app_config


def ask(client, sender: str = f"whatsapp:{PHONE}", *, as_json: bool = False, **auth):
    headers = auth.pop("headers", {"Authorization": f"Bearer {TOKEN}"})
    if as_json:
        return client.post("/studio/entitlement", json={"From": sender}, headers=headers, **auth)
    return client.post("/studio/entitlement", data={"From": sender}, headers=headers, **auth)


def subscribe(client, status: str) -> None:
    webhook = StripeWebhook(client)
    session = checkout_session("cus_s", reference=PHONE[1:])
    webhook.post(event("checkout.session.completed", session, created=T0))
    state = subscription("sub_s", "cus_s", status, T0 + 86400 * 30)
    assert (
        webhook.post(event("customer.subscription.updated", state, created=T0 + 1)).status_code
        == 200
    )


def test_a_paying_contact_is_active(client):
    subscribe(client, "active")
    expected = {"has_account": True, "is_active": True, "status": "active"}
    assert ask(client).json == expected
    assert ask(client, PHONE, as_json=True).json == expected  # SMS form, JSON body


def test_a_canceled_contact_has_an_account_but_is_not_active(client):
    subscribe(client, "canceled")
    assert ask(client).json == {"has_account": True, "is_active": False, "status": "canceled"}


def test_an_unknown_contact(client):
    assert ask(client).json == {"has_account": False, "is_active": False, "status": "none"}


def test_a_known_contact_without_a_subscription(app, client):
    with app.app_context():
        SqlStore(db.session).upsert_contact(PHONE, None)
        db.session.commit()
    assert ask(client).json == {"has_account": True, "is_active": False, "status": "none"}


def test_with_the_paywall_off_everyone_is_active(app, client):
    with app.app_context():
        app.extensions["parley"].billing(db.session).set_paywall(False, "ana")
        db.session.commit()
    assert ask(client).json == {"has_account": False, "is_active": True, "status": "active"}


@pytest.mark.parametrize(
    "auth",
    [
        {"headers": {"X-Parley-Token": TOKEN}},
        {"headers": {}, "query_string": {"token": TOKEN}},
        {"headers": {"Authorization": f"bearer {TOKEN}"}},
    ],
    ids=["x-parley-token", "query", "bearer-lowercase"],
)
def test_the_token_may_come_three_ways(client, auth):
    assert ask(client, **auth).status_code == 200


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"X-Parley-Token": TOKEN + "x"},
        {"X-Parley-Token": "tökén"},
    ],
    ids=["none", "wrong", "not-bearer", "longer", "non-ascii"],
)
def test_without_the_right_token_it_is_401(client, headers):
    response = ask(client, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "is_active" not in response.json


def test_without_studio_token_configured_it_is_503(app_config):
    app_config["STUDIO_TOKEN"] = None
    app = create_app(app_config)
    response = ask(app.test_client())
    assert response.status_code == 503
    assert "STUDIO_TOKEN" in response.json["error"]
    with app.app_context():
        db.engine.dispose()


@pytest.mark.parametrize("sender", ["", "whatsapp:555", "messenger:+15551230001", "+0123456789"])
def test_a_bad_from_is_400(client, sender):
    response = ask(client, sender)
    assert response.status_code == 400
    assert "From" in response.json["error"]


def test_json_that_is_not_an_object_is_400(client):
    response = client.post(
        "/studio/entitlement", json=["From"], headers={"Authorization": f"Bearer {TOKEN}"}
    )
    assert response.status_code == 400
