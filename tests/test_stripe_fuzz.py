"""``POST /stripe/webhook`` with generated, malformed but correctly signed events.

Each body is signed the way Stripe signs (tests/stripe_events.py), so it gets
past the signature check and reaches the parsing, the event readers and the
store. A value of the wrong type, an absurd number or string, a missing or
extra field must get a 4xx (or a 200 for an event Parley ignores), never a
5xx: Stripe would retry a 5xx for three days, and it is not the database's
fault. (A 500 stays right for a failure of Parley's own, which is retried.)
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.stripe_events import (
    STRIPE_API,
    StripeWebhook,
    checkout_session,
    event,
    invoice,
    stripe_settings,
    subscription,
)

T0 = 1_760_000_000
PERIOD_END = 1_762_592_000

FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

#: Values as a careless integrator or a hostile sender with the secret writes them.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=30)
    | st.sampled_from(
        [
            "",
            "\x00",
            "sub_\x00",
            "cus_" + "x" * 5000,
            "²",
            "99999999999999999999",
            "-1",
            "+15551230001\x00",
            "active",
            "canceled",
            "subscription",
            "payment",
        ]
    )
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def valid_events() -> list[dict[str, Any]]:
    """One well-formed event of each type Parley handles."""
    active = subscription("sub_fuzz1", "cus_fuzz1", "active", PERIOD_END)
    session = checkout_session("cus_fuzz1", reference="15551230001", sub_id="sub_fuzz1")
    bill = invoice("sub_fuzz1", "cus_fuzz1", PERIOD_END, reason="subscription_cycle")
    return [
        event("checkout.session.completed", session, created=T0),
        event("customer.subscription.created", active, created=T0 + 1),
        event("customer.subscription.updated", active, created=T0 + 2),
        event("customer.subscription.deleted", {**active, "status": "canceled"}, created=T0 + 3),
        event("invoice.paid", bill, created=T0 + 4),
        event("invoice.payment_failed", bill, created=T0 + 5),
    ]


def paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside nested dicts and lists."""
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, inner in value.items():
            found.extend(paths(inner, (*prefix, key)))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found.extend(paths(inner, (*prefix, index)))
    return found


def changed(original: dict[str, Any], path: tuple, value: Any, delete: bool) -> dict[str, Any]:
    """A copy of `original` with the value at `path` replaced (or deleted)."""
    result = copy.deepcopy(original)
    parent = result
    for key in path[:-1]:
        parent = parent[key]
    if delete and isinstance(parent, dict):
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return result


@pytest.fixture
def app_config(app_config: dict) -> dict:
    app_config.update(stripe_settings())
    return app_config


@pytest.fixture
def stripe_webhook(app, client) -> Iterator[StripeWebhook]:
    """The webhook, with Stripe's API answering that a customer has no phone number.

    (A checkout without a client reference makes Parley read the customer; a
    network failure there is a 500 on purpose: Stripe retries.)
    """
    app.extensions["parley"].resume_paid = lambda ids: None  # no Twilio in these tests
    with responses.RequestsMock(assert_all_requests_are_fired=False) as stripe_api:
        stripe_api.add_callback(
            responses.GET,
            re.compile(re.escape(STRIPE_API) + r"/v1/customers/.*"),
            callback=lambda request: (
                200,
                {"Content-Type": "application/json"},
                json.dumps({"id": request.url.rsplit("/", 1)[-1], "object": "customer"}),
            ),
        )
        yield StripeWebhook(client)


@FUZZ
@given(data=st.data())
def test_signed_events_with_generated_fields_never_get_a_5xx(stripe_webhook, data):
    original = data.draw(st.sampled_from(valid_events()))
    changes = data.draw(st.integers(min_value=1, max_value=3))
    body = original
    for _ in range(changes):
        path = data.draw(st.sampled_from(paths(body)))
        body = changed(body, path, data.draw(VALUES), data.draw(st.booleans()))
    if str(body.get("id")).startswith("evt_"):  # each example a new event, not a duplicate
        body["id"] = f"evt_{data.draw(st.uuids()).hex}"

    response = stripe_webhook.post(body)

    assert response.status_code < 500, (json.dumps(body)[:2000], response.get_data(as_text=True))


@FUZZ
@given(body=VALUES | st.binary(max_size=200))
def test_signed_bodies_that_are_no_event_get_a_400(stripe_webhook, body):
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()

    response = stripe_webhook.post(payload)

    assert response.status_code == 400, (payload[:500], response.get_data(as_text=True))


def _subscription_event(**changes: Any) -> dict[str, Any]:
    active = subscription("sub_fuzz1", "cus_fuzz1", "active", PERIOD_END)
    return event("customer.subscription.updated", {**active, **changes}, created=T0)


@pytest.mark.parametrize(
    "body",
    [
        {**_subscription_event(), "created": -(10**13)},  # before year 1
        {**_subscription_event(), "created": 10**13},  # after 9999
        {**_subscription_event(), "type": "customer.subscription." + "x" * 200},
        {**_subscription_event(), "id": "evt_" + "x" * 300},
        _subscription_event(id="sub_\x00"),
        _subscription_event(customer="cus_" + "x" * 5000),
        _subscription_event(status="active" * 10),
        _subscription_event(current_period_end=10**13),
        event(
            "checkout.session.completed",
            checkout_session("cus_fuzz1", reference="15551230001\x00", sub_id="sub_fuzz1"),
            created=T0,
        ),
        event(
            "invoice.paid",
            invoice("sub_\x00", "cus_fuzz1", PERIOD_END, reason="subscription_cycle"),
            created=T0,
        ),
    ],
)
def test_malformed_values_found_by_the_fuzzer_get_a_400(stripe_webhook, body):
    body = copy.deepcopy(body)
    if str(body.get("id")).startswith("evt_") and len(body["id"]) < 100:
        body["id"] = f"evt_{uuid.uuid4().hex}"

    response = stripe_webhook.post(body)

    assert response.status_code == 400, response.get_data(as_text=True)
