"""Stripe events for tests: signed as Stripe signs them, Parley-written or from fixtures.

Signing follows ../shared/fixtures/stripe/signature.md (stripe-python
``stripe/_webhook.py``): ``Stripe-Signature: t=<unix seconds>,v1=<hex>`` where
the hex is HMAC-SHA256, keyed with the endpoint secret as-is, of
``"<t>.<raw body>"``.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

WEBHOOK_SECRET = "whsec_parley_test_5f1d0c8e2b7a4c39"
SECRET_KEY = "sk_test_parley_51Hx0000000000000000"
PRICE_ID = "price_parley_monthly"
PAYMENT_LINK_URL = "https://buy.stripe.com/test_parley00"
STRIPE_API = "https://api.stripe.com"

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "stripe"
needs_fixtures = pytest.mark.skipif(
    not FIXTURES.is_dir(),
    reason=f"{FIXTURES} is absent (a clone without ../shared): Stripe's own payloads live there",
)


class FixedClock:
    """A clock tests move by hand."""

    def __init__(self, now: dt.datetime) -> None:
        self.current = now

    def now(self) -> dt.datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        self.current += dt.timedelta(**delta)


def stripe_settings(**extra: Any) -> dict[str, Any]:
    """The Stripe settings of a paywalled deployment (Checkout Session mode)."""
    return {
        "STRIPE_SECRET_KEY": SECRET_KEY,
        "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "STRIPE_PRICE_ID": PRICE_ID,
        **extra,
    }


def sign(payload: bytes, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe would send for `payload`."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + payload
    digest = hmac.new(secret.encode("utf-8"), signed, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def event(
    type_: str,
    obj: dict[str, Any],
    *,
    created: int,
    event_id: str | None = None,
    api_version: str = "2025-03-31.basil",
) -> dict[str, Any]:
    """A Stripe event envelope around `obj`."""
    return {
        "id": event_id or f"evt_{uuid.uuid4().hex[:24]}",
        "object": "event",
        "api_version": api_version,
        "created": created,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


def subscription(
    sub_id: str,
    customer: str,
    status: str,
    period_end: int,
    *,
    shape: str = "current",
) -> dict[str, Any]:
    """A subscription: ``current`` keeps the period on its items (API 2025-03-31.basil
    and later), ``old`` on the subscription itself (API 2020-08-27)."""
    item: dict[str, Any] = {
        "id": f"si_{sub_id[4:]}",
        "object": "subscription_item",
        "price": {"id": PRICE_ID, "object": "price", "type": "recurring"},
        "quantity": 1,
        "subscription": sub_id,
    }
    obj: dict[str, Any] = {
        "id": sub_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "items": {"object": "list", "data": [item], "has_more": False},
    }
    if shape == "current":
        item["current_period_start"] = period_end - 30 * 86400
        item["current_period_end"] = period_end
    else:
        obj["current_period_start"] = period_end - 30 * 86400
        obj["current_period_end"] = period_end
    return obj


def invoice(sub_id: str, customer: str, period_end: int, *, reason: str) -> dict[str, Any]:
    """An invoice of the current API shape (subscription under ``parent``)."""
    return {
        "id": f"in_{uuid.uuid4().hex[:14]}",
        "object": "invoice",
        "billing_reason": reason,
        "customer": customer,
        "parent": {
            "type": "subscription_details",
            "subscription_details": {"metadata": {}, "subscription": sub_id},
            "quote_details": None,
        },
        "lines": {
            "object": "list",
            "data": [
                {
                    "id": f"il_{uuid.uuid4().hex[:14]}",
                    "object": "line_item",
                    "parent": {
                        "type": "subscription_item_details",
                        "subscription_item_details": {"subscription": sub_id},
                    },
                    "period": {"start": period_end - 30 * 86400, "end": period_end},
                }
            ],
        },
        "period_end": period_end - 30 * 86400,  # the period billed in arrears
    }


def checkout_session(
    customer: str | None,
    *,
    reference: str | None = None,
    phone: str | None = None,
    sub_id: str | None = None,
) -> dict[str, Any]:
    """A completed subscription-mode Checkout Session."""
    return {
        "id": f"cs_test_{uuid.uuid4().hex}",
        "object": "checkout.session",
        "client_reference_id": reference,
        "customer": customer,
        "customer_details": {"email": None, "phone": phone},
        "mode": "subscription",
        "payment_status": "paid",
        "status": "complete",
        "subscription": sub_id,
    }


_EVENT_TYPES = (
    "checkout.session.completed",
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
)


def fixture_event(name: str, *, created: int | None = None, **changes: Any) -> dict[str, Any]:
    """An event from ../shared/fixtures/stripe/<name>.json, with a fresh event id.

    The fixtures share one placeholder id (``evt_000...``), so each use gets its
    own. `changes` are set on ``data.object``. A data-only file (``*_data_only``)
    is wrapped in an envelope of the type its name starts with.
    """
    raw = json.loads((FIXTURES / f"{name}.json").read_text())
    if raw.get("object") == "event":
        loaded = copy.deepcopy(raw)
        loaded["id"] = f"evt_{uuid.uuid4().hex[:24]}"
    else:
        type_ = next(known for known in _EVENT_TYPES if name.startswith(known + "."))
        loaded = event(type_, copy.deepcopy(raw["object"]), created=created or 0)
    if created is not None:
        loaded["created"] = created
    loaded["data"]["object"].update(changes)
    return loaded


def fixture_resource(kind: str) -> dict[str, Any]:
    """A current-API resource from the stripe/openapi fixtures subset (``subscription``...)."""
    resources = json.loads((FIXTURES / "openapi_fixtures3_subset.json").read_text())
    return copy.deepcopy(resources["resources"][kind])


@dataclass
class StripeWebhook:
    """Posts events to ``/stripe/webhook`` as Stripe does: raw JSON, signed."""

    client: FlaskClient
    secret: str = WEBHOOK_SECRET
    path: str = "/stripe/webhook"

    def post(self, payload: dict[str, Any] | bytes, signature: str | None = "sign"):
        """POST the event; signed unless `signature` is given (None: no header)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if signature == "sign":
            headers["Stripe-Signature"] = sign(body, self.secret)
        elif signature is not None:
            headers["Stripe-Signature"] = signature
        return self.client.post(self.path, data=body, headers=headers)
