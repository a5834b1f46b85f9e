"""``POST /stripe/webhook``, driven as Stripe drives it: raw JSON, signed, at least once,
in any order; with the events of old (2020-08-27) and current API versions."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import responses
import sqlalchemy as sa

from models import Contact, Entitlement, EntitlementChange, StripeEvent, db
from models.store import SqlStore
from tests.stripe_events import (
    STRIPE_API,
    StripeWebhook,
    checkout_session,
    event,
    fixture_event,
    fixture_resource,
    invoice,
    needs_fixtures,
    sign,
    stripe_settings,
    subscription,
)

PHONE = "+15551230001"
REFERENCE = "15551230001"  # client_reference_id: the E.164 digits
T0 = 1_760_000_000  # event times, Unix seconds
PERIOD_END = 1_762_592_000


@pytest.fixture
def app_config(app_config: dict) -> dict:
    app_config.update(stripe_settings())
    return app_config


@pytest.fixture
def stripe_webhook(client) -> StripeWebhook:
    return StripeWebhook(client)


@pytest.fixture
def resumed(app) -> list[list[int]]:
    """What the webhook asked the app to resume (the runner's side records it)."""
    calls: list[list[int]] = []
    app.extensions["parley"].resume_paid = lambda ids: calls.append(list(ids))
    return calls


def count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def entitlement_of(phone: str = PHONE) -> Entitlement | None:
    db.session.expire_all()
    return db.session.scalars(
        sa.select(Entitlement)
        .join(Contact, Contact.id == Entitlement.contact_id)
        .where(Contact.phone == phone)
    ).first()


def contact_id(phone: str = PHONE) -> int:
    return db.session.scalar(sa.select(Contact.id).where(Contact.phone == phone))


def statuses() -> list[tuple[str, str]]:
    rows = db.session.scalars(sa.select(EntitlementChange).order_by(EntitlementChange.id))
    return [(row.old_status, row.new_status) for row in rows]


def utc(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def same_time(stored: dt.datetime | None, seconds: int) -> bool:
    return stored is not None and stored.replace(tzinfo=dt.UTC) == utc(seconds)


def paid(stripe_webhook, customer="cus_parley1", sub_id="sub_parley1", *, at=T0):
    """Checkout completed for PHONE, then the subscription became active."""
    session = checkout_session(customer, reference=REFERENCE, sub_id=sub_id)
    assert (
        stripe_webhook.post(event("checkout.session.completed", session, created=at)).json["action"]
        == "linked"
    )
    active = subscription(sub_id, customer, "active", PERIOD_END)
    response = stripe_webhook.post(event("customer.subscription.created", active, created=at + 1))
    assert response.status_code == 200, response.data


# Paying, cancelling, duplicates and order.


def test_checkout_then_active_subscription_entitles_the_contact_and_resumes_it(
    app, stripe_webhook, resumed
):
    with app.app_context():
        known = SqlStore(db.session).upsert_contact(PHONE, "Ana")
        db.session.commit()

    paid(stripe_webhook)

    with app.app_context():
        row = entitlement_of()
        assert (row.contact_id, row.stripe_customer_id) == (known, "cus_parley1")
        assert (row.stripe_subscription_id, row.status) == ("sub_parley1", "active")
        assert same_time(row.current_period_end, PERIOD_END)
        assert statuses() == [("none", "active")]
    assert resumed == [[known]]


def test_cancellation_locks_the_contact_out_again(app, client, stripe_webhook, resumed):
    paid(stripe_webhook)
    canceled = subscription("sub_parley1", "cus_parley1", "canceled", PERIOD_END)

    response = stripe_webhook.post(event("customer.subscription.deleted", canceled, created=T0 + 9))

    assert response.status_code == 200
    with app.app_context():
        assert entitlement_of().status == "canceled"
        assert statuses() == [("none", "active"), ("active", "canceled")]
    # And an old "active" delivered late does not let the contact back in.
    late = subscription("sub_parley1", "cus_parley1", "active", PERIOD_END)
    stripe_webhook.post(event("customer.subscription.updated", late, created=T0 + 5))
    with app.app_context():
        assert entitlement_of().status == "canceled"
        assert len(resumed) == 1


def test_the_same_event_twice_changes_nothing(app, stripe_webhook, resumed):
    session = checkout_session("cus_parley1", reference=REFERENCE)
    stripe_webhook.post(event("checkout.session.completed", session, created=T0))
    active = event(
        "customer.subscription.created",
        subscription("sub_parley1", "cus_parley1", "active", PERIOD_END),
        created=T0 + 1,
    )
    # Same second, a later stage of life: applied after `active`.
    past_due = event(
        "customer.subscription.updated",
        subscription("sub_parley1", "cus_parley1", "past_due", PERIOD_END),
        created=T0 + 1,
    )
    first = stripe_webhook.post(active)
    stripe_webhook.post(past_due)
    again = stripe_webhook.post(active)  # Stripe delivers at least once

    assert first.json["duplicate"] is False
    assert (again.status_code, again.json["duplicate"]) == (200, True)
    with app.app_context():
        # Applied a second time, `active` (same second, same stage) would win again.
        assert entitlement_of().status == "past_due"
        assert statuses() == [("none", "active"), ("active", "past_due")]
        assert count(StripeEvent) == 3
    assert len(resumed) == 1


def test_updated_before_created_ends_in_the_state_of_the_latest_event(app, stripe_webhook):
    session = checkout_session("cus_parley1", reference=REFERENCE, sub_id="sub_parley1")
    created = event(
        "customer.subscription.created",
        subscription("sub_parley1", "cus_parley1", "incomplete", PERIOD_END - 100),
        created=T0,
    )
    updated = event(
        "customer.subscription.updated",
        subscription("sub_parley1", "cus_parley1", "active", PERIOD_END),
        created=T0 + 4,
    )
    # Stripe's usual order is created, updated, checkout; here it is reversed.
    stripe_webhook.post(updated)
    late = stripe_webhook.post(created)
    stripe_webhook.post(event("checkout.session.completed", session, created=T0 + 5))

    assert late.json["action"] == "stale"
    with app.app_context():
        row = entitlement_of()
        assert (row.status, row.last_event_created) == ("active", T0 + 4)
        assert same_time(row.current_period_end, PERIOD_END)
        assert count(Entitlement) == 1  # the unlinked row became the contact's


def test_same_second_created_incomplete_then_updated_active_is_active(app, stripe_webhook):
    paid_late = [
        event(
            "customer.subscription.updated",
            subscription("sub_parley1", "cus_parley1", "active", PERIOD_END),
            created=T0,
        ),
        event(
            "customer.subscription.created",
            subscription("sub_parley1", "cus_parley1", "incomplete", PERIOD_END),
            created=T0,
        ),
    ]
    for item in paid_late:
        stripe_webhook.post(item)
    stripe_webhook.post(
        event(
            "checkout.session.completed",
            checkout_session("cus_parley1", reference=REFERENCE),
            created=T0,
        )
    )
    with app.app_context():
        assert entitlement_of().status == "active"


def test_invoice_payment_failure_then_payment(app, stripe_webhook):
    paid(stripe_webhook)
    renewal = invoice(
        "sub_parley1", "cus_parley1", PERIOD_END + 30 * 86400, reason="subscription_cycle"
    )

    stripe_webhook.post(event("invoice.payment_failed", renewal, created=T0 + 100))
    with app.app_context():
        row = entitlement_of()
        assert row.status == "past_due"
        assert same_time(row.past_due_since, T0 + 100)

    stripe_webhook.post(event("invoice.paid", renewal, created=T0 + 200))
    with app.app_context():
        row = entitlement_of()
        assert (row.status, row.past_due_since) == ("active", None)
        assert same_time(row.current_period_end, PERIOD_END + 30 * 86400)


# Bad requests.


def _signed(body: bytes, **kwargs) -> str:
    return sign(body, **kwargs)


BODY = json.dumps(
    event("customer.subscription.created", subscription("sub_x", "cus_x", "active", 1), created=T0)
).encode()


@pytest.mark.parametrize(
    ("body", "signature", "reason"),
    [
        (BODY, None, b"missing Stripe-Signature"),
        (BODY, _signed(BODY, secret="whsec_someone_else"), b"does not verify"),
        (BODY, _signed(BODY.replace(b"active", b"trialing")), b"does not verify"),
        (BODY, _signed(BODY, timestamp=int(time.time()) - 301), b"tolerance"),
        (BODY, "t=abc,v1", b"does not verify"),
        (b"not json{", "sign", b"not JSON"),
        (b"[1, 2]", "sign", b"not a Stripe event"),
        (json.dumps({"object": "event", "type": "x", "created": 1}).encode(), "sign", b"evt_"),
        (json.dumps({**json.loads(BODY), "data": {}}).encode(), "sign", b"data.object"),
    ],
    ids=[
        "no-header",
        "other-secret",
        "tampered-body",
        "too-old",
        "garbled-header",
        "not-json",
        "not-an-object",
        "no-id",
        "no-object",
    ],
)
def test_bad_signature_or_body_is_400_and_nothing_is_stored(
    app, stripe_webhook, body, signature, reason
):
    if signature == "sign":
        signature = sign(body)
    response = stripe_webhook.post(body, signature=signature)

    assert response.status_code == 400
    assert reason in response.data
    with app.app_context():
        assert (count(StripeEvent), count(Entitlement), count(Contact)) == (0, 0, 0)


def test_a_signed_object_without_what_its_type_promises_is_400(app, stripe_webhook):
    broken = event("customer.subscription.updated", {"object": "subscription"}, created=T0)

    response = stripe_webhook.post(broken)

    assert response.status_code == 400
    assert b"sub_" in response.data
    with app.app_context():
        assert count(Entitlement) == 0
        stored = db.session.get(StripeEvent, broken["id"])
        assert stored.processed_at is None and "EventShapeError" in stored.error


def test_missing_webhook_secret_is_503(app_config, fake_openai):
    from app import create_app

    app_config["STRIPE_WEBHOOK_SECRET"] = None
    app = create_app(app_config)
    response = StripeWebhook(app.test_client()).post(BODY)
    assert response.status_code == 503
    assert b"STRIPE_WEBHOOK_SECRET" in response.data
    with app.app_context():
        db.engine.dispose()


def test_an_unhandled_event_type_is_stored_and_acknowledged(app, stripe_webhook):
    customer_created = event("customer.created", {"id": "cus_x", "object": "customer"}, created=T0)

    response = stripe_webhook.post(customer_created)

    assert (response.status_code, response.json["action"]) == (200, "unhandled")
    with app.app_context():
        stored = db.session.get(StripeEvent, customer_created["id"])
        assert stored.type == "customer.created" and stored.processed_at is not None


@responses.activate
def test_a_failure_while_applying_is_500_then_the_retry_applies_it(app, stripe_webhook):
    # No client_reference_id, no phone on the session: the customer's phone is read.
    session = checkout_session("cus_nophone1")
    completed = event("checkout.session.completed", session, created=T0)
    url = f"{STRIPE_API}/v1/customers/cus_nophone1"
    responses.get(url, status=500, json={"error": {"type": "api_error", "message": "boom"}})

    failed = stripe_webhook.post(completed)

    assert failed.status_code == 500
    with app.app_context():
        stored = db.session.get(StripeEvent, completed["id"])
        assert stored.processed_at is None and "EntitlementError" in stored.error
        assert count(Entitlement) == 0

    responses.replace(responses.GET, url, json={"id": "cus_nophone1", "phone": "+1 555-123-0001"})
    retried = stripe_webhook.post(completed)

    assert (retried.status_code, retried.json["action"]) == (200, "linked")
    with app.app_context():
        assert entitlement_of().stripe_customer_id == "cus_nophone1"
        stored = db.session.get(StripeEvent, completed["id"])
        assert stored.processed_at is not None and stored.error is None


def test_checkout_links_by_the_phone_collected_at_checkout(app, stripe_webhook):
    session = checkout_session("cus_parley2", phone="+15551230002")
    stripe_webhook.post(event("checkout.session.completed", session, created=T0))
    with app.app_context():
        assert entitlement_of("+15551230002").stripe_customer_id == "cus_parley2"


# Old (2020-08-27) and current API shapes, from Stripe's and others' payloads.


@needs_fixtures
def test_old_api_events_from_the_stripe_cli(app, stripe_webhook, resumed):
    checkout = fixture_event("checkout.session.completed", client_reference_id=REFERENCE)
    created = fixture_event("customer.subscription.created")
    unrelated_invoice = fixture_event("invoice.paid")  # a manual invoice: no subscription
    deleted = fixture_event("customer.subscription.deleted", created=created["created"] + 60)

    assert stripe_webhook.post(checkout).json["action"] == "linked"
    assert stripe_webhook.post(created).json["action"] == "applied"
    with app.app_context():
        row = entitlement_of()
        assert (row.stripe_customer_id, row.stripe_subscription_id, row.status) == (
            "cus_00000000000000",
            "sub_000000000000000000000000",
            "active",
        )
        assert same_time(row.current_period_end, 1650998510)  # on the subscription
        assert resumed == [[contact_id()]]
    assert stripe_webhook.post(unrelated_invoice).json["action"] == "no_subscription"
    assert stripe_webhook.post(deleted).json["action"] == "applied"
    with app.app_context():
        assert entitlement_of().status == "canceled"


@needs_fixtures
def test_old_api_invoice_subscription_field(app, stripe_webhook):
    stripe_webhook.post(fixture_event("checkout.session.completed", client_reference_id=REFERENCE))
    sub = "sub_000000000000000000000000"
    failed = fixture_event(
        "invoice.payment_failed", subscription=sub, billing_reason="subscription_cycle"
    )
    repaid = fixture_event("invoice.paid", subscription=sub, created=failed["created"] + 10)

    stripe_webhook.post(failed)
    with app.app_context():
        assert entitlement_of().status == "past_due"
    stripe_webhook.post(repaid)
    with app.app_context():
        assert entitlement_of().status == "active"


@needs_fixtures
def test_current_api_subscription_keeps_its_period_on_the_items(app, stripe_webhook):
    resource = fixture_resource("subscription")
    assert "current_period_end" not in resource  # the current shape
    checkout = fixture_event(
        "checkout.session.completed.subscription_mode_data_only",
        created=T0,
        client_reference_id=REFERENCE,
        customer=resource["customer"],
    )
    updated = event("customer.subscription.updated", resource, created=T0 + 1)

    stripe_webhook.post(checkout)
    stripe_webhook.post(updated)

    with app.app_context():
        row = entitlement_of()
        assert (row.stripe_subscription_id, row.status) == (resource["id"], "active")
        item_end = resource["items"]["data"][0]["current_period_end"]
        assert same_time(row.current_period_end, item_end)


@needs_fixtures
def test_current_api_invoice_names_its_subscription_under_parent(app, stripe_webhook):
    stripe_webhook.post(
        event(
            "checkout.session.completed",
            checkout_session("cus_1234", reference=REFERENCE),
            created=1745430000,
        )
    )
    active = subscription("sub_1234", "cus_1234", "active", 1745433906)
    stripe_webhook.post(event("customer.subscription.created", active, created=1745430001))
    failed = fixture_event("invoice.payment_failed.newer_api_data_only", created=1745433964)
    assert "subscription" not in failed["data"]["object"]

    response = stripe_webhook.post(failed)

    assert response.json["action"] == "applied"
    with app.app_context():
        row = entitlement_of()
        assert (row.stripe_subscription_id, row.status) == ("sub_1234", "past_due")
        assert same_time(row.past_due_since, 1745433964)


@needs_fixtures
def test_an_event_type_parley_does_not_use_from_stripes_fixtures(app, stripe_webhook):
    plan_created = fixture_resource("event")
    assert stripe_webhook.post(plan_created).json["action"] == "unhandled"
