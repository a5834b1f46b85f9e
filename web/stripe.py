"""Stripe's webhook, ``POST /stripe/webhook``, and the page Checkout returns to.

In the Stripe Dashboard (Developers → Webhooks), add an endpoint at
``PUBLIC_BASE_URL`` + ``/stripe/webhook`` for ``checkout.session.completed``,
``customer.subscription.created``, ``customer.subscription.updated``,
``customer.subscription.deleted``, ``invoice.paid`` and
``invoice.payment_failed``, and set its signing secret as
``STRIPE_WEBHOOK_SECRET``.

Answers: 400 for a request that is not a genuine, well-formed Stripe event
(nothing stored); 200 for a processed, duplicate or unhandled event; 500 when
applying failed (rolled back; Stripe retries for up to three days); 503 while
``STRIPE_WEBHOOK_SECRET`` is not set. (Stripe docs, "Receive Stripe events in
your webhook endpoint": any non-2xx answer is retried.)
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request

from billing.paywall import Billing
from billing.stripe_objects import EventShapeError
from config import reveal
from integrations.stripe import WebhookPayloadError, construct_event
from models import db

log = logging.getLogger("parley.web.stripe")

bp = Blueprint("stripe", __name__, url_prefix="/stripe")

_RETURN_TEXT = {
    "success": "Thank you! Your subscription is active. You can go back to the chat now.",
    "cancel": "No payment was made. You can go back to the chat and ask for the link again.",
    "portal": "You can go back to the chat now.",
}


def _plain(status: int, reason: str) -> Response:
    return Response(reason + "\n", status=status, mimetype="text/plain")


@bp.post("/webhook")
def webhook() -> Response:
    """Verify, store and apply one Stripe event (each event id once)."""
    parley = current_app.extensions["parley"]
    secret = reveal(parley.settings.stripe_webhook_secret)
    if not secret:
        log.error("stripe.webhook.unconfigured: STRIPE_WEBHOOK_SECRET is not set")
        return _plain(503, "Service unavailable: STRIPE_WEBHOOK_SECRET is not set on the server")
    try:
        event = construct_event(
            request.get_data(cache=False), request.headers.get("Stripe-Signature"), secret
        )
    except WebhookPayloadError as error:
        log.warning("stripe.webhook.rejected reason=%s", error.reason)
        return _plain(400, f"Bad request: {error.reason}")

    billing = parley.billing(db.session)
    try:
        outcome = billing.handle_event(event)
        db.session.commit()
    except EventShapeError as error:
        db.session.rollback()
        log.warning("stripe.webhook.malformed event=%s reason=%s", event["id"], error)
        _store_failure(billing, event, error)
        return _plain(400, f"Bad request: {error}")
    except Exception as error:
        db.session.rollback()
        log.exception("stripe.webhook.failed event=%s type=%s", event["id"], event["type"])
        _store_failure(billing, event, error)
        return _plain(500, "Internal error: the event was not applied; Stripe will retry it")

    if outcome.entitled_contact_ids:
        try:
            parley.resume_paid(outcome.entitled_contact_ids)
        except Exception:
            # The event is stored as processed: a retry would be a duplicate and
            # resume nobody, so answer 200 and leave the trace here.
            log.exception("stripe.webhook.resume_failed contacts=%s", outcome.entitled_contact_ids)
    return jsonify(received=True, duplicate=outcome.duplicate, action=outcome.action)


def _store_failure(billing: Billing, event: dict, error: Exception) -> None:
    try:
        billing.record_failure(event, error)
        db.session.commit()
    except Exception:
        db.session.rollback()
        log.exception("stripe.webhook.failure_not_stored event=%s", event["id"])


@bp.get("/return")
def checkout_return() -> Response:
    """Where Checkout and the customer portal send the contact back."""
    text = _RETURN_TEXT.get(request.args.get("result", ""), _RETURN_TEXT["portal"])
    return _plain(200, text)
