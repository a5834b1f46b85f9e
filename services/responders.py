"""Responders: answers given before the flow runs (step 4 of a turn)."""

from __future__ import annotations

import logging

from engine.ports import Contact, EntitlementError
from services.billing import Billing
from services.turns import Responder

log = logging.getLogger("parley.responders")

NO_SUBSCRIPTION = "You don't have a subscription with us yet."
PORTAL = "Manage or cancel your subscription here: {url}"
PORTAL_DOWN = "Sorry, I can't open your billing page right now. Please try again in a minute."


def billing_keyword(billing: Billing) -> Responder:
    """Answer ``BILLING_KEYWORD`` (default ``billing``) with a Stripe customer-portal link."""

    def respond(contact: Contact, text: str) -> list[str] | None:
        if not billing.is_billing_keyword(text):
            return None
        try:
            url = billing.portal_url(contact.id)
        except EntitlementError as error:
            log.error("billing.portal_failed contact=%s reason=%s", contact.id, error)
            return [PORTAL_DOWN]
        return [PORTAL.format(url=url)] if url else [NO_SUBSCRIPTION]

    return respond
