"""The billing service: entitlement rules, payment links and reminders, the switch, and
the Stripe API calls, which go over HTTP to `responses` (the real `stripe` client)."""

from __future__ import annotations

import datetime as dt
from urllib.parse import parse_qs

import pytest
import responses
import sqlalchemy as sa

from app import create_app
from billing.paywall import Billing, SqlEntitlements, missing_stripe_settings
from config import ConfigError, Settings, load_settings
from engine.ports import Contact, EntitlementError
from integrations.stripe import (
    StripeGateway,
    client_reference_id,
    payment_link_url,
    phone_from_reference,
)
from models import Entitlement, PaymentLink, SettingChange, db
from models.store import SqlStore
from tests.stripe_events import (
    PAYMENT_LINK_URL,
    PRICE_ID,
    SECRET_KEY,
    STRIPE_API,
    FixedClock,
    checkout_session,
    event,
    invoice,
    stripe_settings,
    subscription,
)

PHONE = "+15551230001"
NOW = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
T0 = int(NOW.timestamp())
CHECKOUT_URL = "https://checkout.stripe.com/c/pay/cs_test_a1parley"


@pytest.fixture
def app_config(app_config: dict) -> dict:
    app_config.update(stripe_settings(PAYWALL_ENABLED="1"))
    return app_config


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture
def ctx(app):
    with app.app_context():
        yield app


def billing(app, clock: FixedClock, **changes) -> Billing:
    """The app's billing service, with some settings changed (by variable name; None unsets)."""
    settings = app.extensions["parley"].settings
    changed = {**settings.model_dump(), **{name.lower(): value for name, value in changes.items()}}
    return Billing(db.session, Settings.model_validate(changed), clock=clock)


def new_contact(phone: str = PHONE) -> Contact:
    contact_id = SqlStore(db.session).upsert_contact(phone, None)
    db.session.commit()
    return Contact(id=contact_id, phone=phone, channel="whatsapp")


def form(call) -> dict[str, list[str]]:
    return parse_qs(call.request.body)


def subscribe(service: Billing, contact: Contact, status: str, at: int = T0) -> None:
    """Link PHONE's customer and give its subscription `status`, through events."""
    reference = client_reference_id(contact.phone)
    service.handle_event(
        event(
            "checkout.session.completed", checkout_session("cus_a", reference=reference), created=at
        )
    )
    service.handle_event(
        event(
            "customer.subscription.updated",
            subscription("sub_a", "cus_a", status, at + 86400 * 30),
            created=at + 1,
        )
    )
    db.session.commit()


# Who is entitled.


@pytest.mark.parametrize(
    ("status", "entitled"),
    [
        ("active", True),
        ("trialing", True),
        ("incomplete", False),
        ("unpaid", False),
        ("paused", False),
        ("canceled", False),
    ],
)
def test_entitlement_by_subscription_status(ctx, clock, status, entitled):
    contact = new_contact()
    service = billing(ctx, clock)
    subscribe(service, contact, status)
    assert service.entitlement(contact.id).status == status
    assert service.is_entitled(contact.id) is entitled


def test_past_due_is_entitled_during_the_grace_period_only(ctx, clock):
    contact = new_contact()
    service = billing(ctx, clock)
    subscribe(service, contact, "active")
    renewal = invoice("sub_a", "cus_a", T0 + 86400 * 60, reason="subscription_cycle")
    service.handle_event(event("invoice.payment_failed", renewal, created=T0 + 100))
    db.session.commit()

    clock.advance(days=2, hours=23)
    assert service.is_entitled(contact.id)
    assert not billing(ctx, clock, PAYWALL_GRACE_DAYS="2").is_entitled(contact.id)
    clock.advance(hours=1, seconds=101)
    assert not service.is_entitled(contact.id)


def test_a_first_invoice_failing_leaves_the_subscription_incomplete(ctx, clock):
    contact = new_contact()
    service = billing(ctx, clock)
    subscribe(service, contact, "incomplete")
    first = invoice("sub_a", "cus_a", T0 + 86400 * 30, reason="subscription_create")
    outcome = service.handle_event(event("invoice.payment_failed", first, created=T0 + 50))
    assert outcome.action == "first_invoice"
    assert service.entitlement(contact.id).status == "incomplete"


def test_a_late_deletion_of_an_old_subscription_does_not_lock_out_a_new_one(ctx, clock):
    contact = new_contact()
    service = billing(ctx, clock)
    subscribe(service, contact, "active")
    new = subscription("sub_b", "cus_a", "active", T0 + 86400 * 90)
    service.handle_event(event("customer.subscription.created", new, created=T0 + 500))
    old = subscription("sub_a", "cus_a", "canceled", T0 + 86400 * 30)
    outcome = service.handle_event(event("customer.subscription.deleted", old, created=T0 + 600))

    assert outcome.action == "other_subscription"
    row = service.entitlement(contact.id)
    assert (row.stripe_subscription_id, row.status) == ("sub_b", "active")


def test_entitled_contact_ids_lists_only_who_just_became_entitled(ctx, clock):
    contact = new_contact()
    service = billing(ctx, clock)
    reference = client_reference_id(PHONE)
    linked = service.handle_event(
        event(
            "checkout.session.completed", checkout_session("cus_a", reference=reference), created=T0
        )
    )
    first = service.handle_event(
        event(
            "customer.subscription.created",
            subscription("sub_a", "cus_a", "active", T0 + 9),
            created=T0,
        )
    )
    renewed = service.handle_event(
        event(
            "customer.subscription.updated",
            subscription("sub_a", "cus_a", "active", T0 + 99),
            created=T0 + 5,
        )
    )
    assert (linked.entitled_contact_ids, first.entitled_contact_ids) == ([], [contact.id])
    assert renewed.entitled_contact_ids == []


# Payment links and reminders.


def _stripe_checkout_api() -> None:
    responses.post(
        f"{STRIPE_API}/v1/customers", json={"id": "cus_new1", "object": "customer", "phone": PHONE}
    )
    responses.post(
        f"{STRIPE_API}/v1/checkout/sessions",
        json={"id": "cs_test_a1parley", "object": "checkout.session", "url": CHECKOUT_URL},
    )


@responses.activate
def test_unentitled_contact_gets_a_checkout_session_for_them_with_phone_prefilled(ctx, clock):
    _stripe_checkout_api()
    contact = new_contact()

    check = SqlEntitlements(billing(ctx, clock)).check(contact, "subscription")
    db.session.commit()

    assert (check.entitled, check.payment_url, check.remind, check.status) == (
        False,
        CHECKOUT_URL,
        True,
        "none",
    )
    customer_call, session_call = responses.calls
    assert customer_call.request.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert form(customer_call)["phone"] == [PHONE]
    assert form(customer_call)["metadata[parley_contact_id]"] == [str(contact.id)]
    sent = form(session_call)
    assert sent["mode"] == ["subscription"]
    assert sent["client_reference_id"] == ["15551230001"]
    assert sent["customer"] == ["cus_new1"]
    assert sent["line_items[0][price]"] == [PRICE_ID]
    assert sent["phone_number_collection[enabled]"] == ["true"]
    assert sent["success_url"] == ["https://parley.example.com/stripe/return?result=success"]
    assert billing(ctx, clock).entitlement(contact.id).stripe_customer_id == "cus_new1"


@responses.activate
def test_the_link_is_reused_and_reminders_are_sent_at_most_once_a_day(ctx, clock):
    _stripe_checkout_api()
    contact = new_contact()
    entitlements = SqlEntitlements(billing(ctx, clock))

    first = entitlements.check(contact, "subscription")
    clock.advance(hours=5)
    second = entitlements.check(contact, "subscription")
    clock.advance(hours=19, minutes=1)  # a day after the first: the session is about to expire
    third = entitlements.check(contact, "subscription")
    db.session.commit()

    assert (first.remind, second.remind, third.remind) == (True, False, True)
    assert second.payment_url == first.payment_url
    posted = [call.request.url for call in responses.calls]
    assert posted == [
        f"{STRIPE_API}/v1/customers",
        f"{STRIPE_API}/v1/checkout/sessions",
        f"{STRIPE_API}/v1/checkout/sessions",  # a new session, the same customer
    ]
    assert form(responses.calls[2])["customer"] == ["cus_new1"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PaymentLink)) == 2


@responses.activate
def test_a_configured_payment_link_gets_client_reference_id_and_no_api_call(ctx, clock):
    contact = new_contact()
    service = billing(ctx, clock, STRIPE_PRICE_ID=None, STRIPE_PAYMENT_LINK_URL=PAYMENT_LINK_URL)

    check = SqlEntitlements(service).check(contact, "subscription")

    assert check.payment_url == f"{PAYMENT_LINK_URL}?client_reference_id=15551230001"
    assert len(responses.calls) == 0


def test_a_paid_link_is_not_offered_again(ctx, clock):
    contact = new_contact()
    service = billing(ctx, clock, STRIPE_PRICE_ID=None, STRIPE_PAYMENT_LINK_URL=PAYMENT_LINK_URL)
    first, _ = service.payment_link(contact)
    subscribe(service, contact, "active")
    canceled = subscription("sub_a", "cus_a", "canceled", T0)
    service.handle_event(event("customer.subscription.deleted", canceled, created=T0 + 60))

    second, remind = service.payment_link(contact)

    assert first.paid_at is not None
    assert second.id != first.id and remind is True


def test_paywall_off_means_entitled_without_a_link(ctx, clock):
    contact = new_contact()
    check = SqlEntitlements(billing(ctx, clock, PAYWALL_ENABLED="0")).check(contact, "subscription")
    assert (check.entitled, check.payment_url, check.status) == (True, None, "active")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(PaymentLink)) == 0


@responses.activate
def test_stripe_errors_become_entitlement_errors_without_the_key(ctx, clock):
    responses.post(
        f"{STRIPE_API}/v1/customers",
        status=401,
        json={"error": {"type": "invalid_request_error", "message": "Invalid API Key provided"}},
    )
    contact = new_contact()
    with pytest.raises(EntitlementError) as raised:
        SqlEntitlements(billing(ctx, clock)).check(contact, "subscription")
    assert "HTTP 401" in str(raised.value)
    assert SECRET_KEY not in str(raised.value)


# Self-service and lookups.


@responses.activate
def test_portal_link_for_a_contact_with_a_customer(ctx, clock):
    responses.post(
        f"{STRIPE_API}/v1/billing_portal/sessions",
        json={
            "id": "bps_1",
            "object": "billing_portal.session",
            "url": "https://billing.stripe.com/p/session/test_1",
        },
    )
    contact = new_contact()
    stranger = new_contact("+15551230009")
    service = billing(ctx, clock)
    subscribe(service, contact, "active")

    assert service.portal_url(contact.id) == "https://billing.stripe.com/p/session/test_1"
    assert service.portal_url(stranger.id) is None
    sent = form(responses.calls[0])
    assert sent["customer"] == ["cus_a"]
    assert sent["return_url"] == ["https://parley.example.com/stripe/return?result=portal"]
    assert service.is_billing_keyword("  BILLING ") and not service.is_billing_keyword("bill")


@responses.activate
def test_customer_phone_lookup_and_a_configured_api_base():
    responses.get("http://127.0.0.1:12111/v1/customers/cus_a", json={"id": "cus_a", "phone": PHONE})
    responses.get(
        "http://127.0.0.1:12111/v1/customers/cus_gone", json={"id": "cus_gone", "deleted": True}
    )
    gateway = StripeGateway(SECRET_KEY, api_base="http://127.0.0.1:12111/")
    assert gateway.customer_phone("cus_a") == PHONE
    assert gateway.customer_phone("cus_gone") is None


def test_client_reference_id_round_trip_and_stripes_rule():
    assert client_reference_id(PHONE) == "15551230001"
    assert phone_from_reference("15551230001") == PHONE
    for not_ours in (None, "", "order-42", "0123456789", "1" * 16):
        assert phone_from_reference(not_ours) is None
    with pytest.raises(ValueError):
        client_reference_id("15551230001")
    assert payment_link_url(PAYMENT_LINK_URL + "?prefilled_email=a%40b.co", "1555") == (
        PAYMENT_LINK_URL + "?prefilled_email=a%40b.co&client_reference_id=1555"
    )
    with pytest.raises(ValueError):
        payment_link_url(PAYMENT_LINK_URL, "+15551230001")


# The switch and its settings.


def test_the_database_switch_wins_over_the_environment_and_is_recorded(ctx, clock):
    service = billing(ctx, clock)
    assert service.paywall_enabled()  # PAYWALL_ENABLED=1
    service.set_paywall(False, "ana")
    db.session.commit()
    assert not service.paywall_enabled()
    change = db.session.scalars(sa.select(SettingChange)).one()
    assert (change.key, change.old, change.new, change.changed_by) == (
        "paywall_enabled",
        None,
        "off",
        "ana",
    )


def test_switching_on_without_stripe_settings_names_what_is_missing(ctx, clock):
    service = billing(ctx, clock, STRIPE_SECRET_KEY=None, STRIPE_PRICE_ID=None)
    with pytest.raises(ConfigError) as raised:
        service.set_paywall(True, "ana")
    assert raised.value.variables == [
        "STRIPE_SECRET_KEY",
        "STRIPE_PRICE_ID or STRIPE_PAYMENT_LINK_URL",
    ]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SettingChange)) == 0


def test_missing_stripe_settings():
    def missing(values: dict) -> list[str]:
        return missing_stripe_settings(load_settings(values))

    assert missing(stripe_settings(PUBLIC_BASE_URL="https://x")) == []
    assert missing(stripe_settings()) == ["STRIPE_SUCCESS_URL or PUBLIC_BASE_URL"]
    link_only = stripe_settings(STRIPE_PRICE_ID=None, STRIPE_PAYMENT_LINK_URL=PAYMENT_LINK_URL)
    assert missing(link_only) == []
    assert missing({}) == [
        "STRIPE_SECRET_KEY",
        "STRIPE_WEBHOOK_SECRET",
        "STRIPE_PRICE_ID or STRIPE_PAYMENT_LINK_URL",
    ]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"PAYWALL_ENABLED": "true"}, "STRIPE_SECRET_KEY"),
        (
            {
                "PAYWALL_ENABLED": "on",
                **stripe_settings(STRIPE_WEBHOOK_SECRET=None, PUBLIC_BASE_URL="https://x"),
            },
            "STRIPE_WEBHOOK_SECRET",
        ),
        ({"PAYWALL_ENABLED": "maybe"}, "PAYWALL_ENABLED"),
        ({"PAYWALL_GRACE_DAYS": "three"}, "PAYWALL_GRACE_DAYS"),
    ],
)
def test_startup_refuses_a_paywall_it_cannot_run(settings, named):
    with pytest.raises(ConfigError) as raised:
        create_app({"TESTING": True, "DATABASE_URL": "sqlite://", **settings})
    assert named in raised.value.variables
    assert named in str(raised.value)


def test_startup_with_the_paywall_on_and_stripe_set_up():
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": "sqlite://",
            "PAYWALL_ENABLED": "yes",
            **stripe_settings(PUBLIC_BASE_URL="https://x"),
        }
    )
    assert app.extensions["parley"].settings.paywall_enabled is True
    with app.app_context():
        db.engine.dispose()


def test_unlinked_rows_are_adopted_at_checkout(ctx, clock):
    service = billing(ctx, clock)
    service.handle_event(
        event(
            "customer.subscription.created",
            subscription("sub_z", "cus_z", "active", T0 + 9),
            created=T0,
        )
    )
    unlinked = db.session.scalars(sa.select(Entitlement)).one()
    assert unlinked.contact_id is None
    outcome = service.handle_event(
        event(
            "checkout.session.completed",
            checkout_session("cus_z", reference="15551230007"),
            created=T0 + 1,
        )
    )
    contact = service.entitlement(outcome.entitled_contact_ids[0])
    assert (contact.stripe_subscription_id, contact.status) == ("sub_z", "active")
