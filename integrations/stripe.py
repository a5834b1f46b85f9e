"""The Stripe edge: webhook verification and the few API calls the paywall makes.

Plain Python on the official ``stripe`` package (11 to 14) through a
`stripe.StripeClient` (never the global ``stripe.api_key``); imports no Flask.
Library errors become `engine.ports.EntitlementError`, whose message never holds
the secret key.

Sources:
    - Signatures: stripe-python ``stripe/_webhook.py`` (``Webhook.construct_event``:
      HMAC-SHA256 of ``"<t>.<body>"``, 300 s tolerance) and Stripe docs, "Check the
      webhook signatures".
    - ``client_reference_id``: Stripe docs, "Payment Links URL parameters": letters,
      digits, ``-`` and ``_``, at most 200 characters (other values are dropped).
    - Checkout Sessions (``mode=subscription``, ``customer``,
      ``phone_number_collection``), Customers and customer-portal sessions: the
      Stripe API reference.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import stripe
from stripe import RequestsClient, StripeClient

from engine.ports import EntitlementError

__all__ = [
    "DEFAULT_TIMEOUT",
    "CheckoutLink",
    "StripeGateway",
    "WebhookPayloadError",
    "client_reference_id",
    "construct_event",
    "payment_link_url",
    "phone_from_reference",
]

DEFAULT_TIMEOUT = 5.0
"""Seconds per Stripe API call. A payment link is made inside a turn, which must
answer within Twilio's 15 s; the library's own default is 80 s."""

#: The last second a datetime can hold (9999-12-31T23:59:59Z): a later ``created`` is no time.
_LATEST_TIMESTAMP = 253_402_300_799

# Stripe's event ids and types ("The Event object"), within the columns that store them.
_EVENT_ID_RE = re.compile(r"evt_[A-Za-z0-9_]{1,251}")
_EVENT_TYPE_RE = re.compile(r"[a-z0-9_.]{1,100}")

# E.164 (ITU-T E.164): a country code that never starts with 0, at most 15 digits.
_E164_DIGITS_RE = re.compile(r"[1-9][0-9]{7,14}")


class WebhookPayloadError(ValueError):
    """A webhook request that is not a genuine, well-formed Stripe event (answer 400).

    Attributes:
        reason: Why, for the response and the log (never the payload or the secret).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class CheckoutLink:
    """A Checkout Session made for one contact.

    Attributes:
        session_id: ``cs_...``.
        url: The page the contact pays on (valid 24 hours, Stripe's default expiry).
        customer_id: ``cus_...``, created for the contact unless one was given.
    """

    session_id: str
    url: str
    customer_id: str


def client_reference_id(phone: str) -> str:
    """The ``client_reference_id`` for a contact: the E.164 digits without ``+``.

    ``+15551234567`` becomes ``15551234567``: Payment Links only keep letters,
    digits, ``-`` and ``_``, so the ``+`` must go.

    Raises:
        ValueError: `phone` is not ``+`` and 8 to 15 digits.
    """
    digits = phone[1:] if phone.startswith("+") else ""
    if not _E164_DIGITS_RE.fullmatch(digits):
        raise ValueError(f"not an E.164 phone number: {phone!r}")
    return digits


def phone_from_reference(reference: str | None) -> str | None:
    """The E.164 phone of a `client_reference_id`, or None when it is not one of ours."""
    if reference and _E164_DIGITS_RE.fullmatch(reference):
        return "+" + reference
    return None


def payment_link_url(base_url: str, reference: str) -> str:
    """A configured Payment Link URL with ``client_reference_id`` added to its query.

    Args:
        base_url: ``STRIPE_PAYMENT_LINK_URL``, e.g. ``https://buy.stripe.com/test_abc``.
        reference: From `client_reference_id`.

    Raises:
        ValueError: `reference` breaks Stripe's rule (letters, digits, ``-``, ``_``,
            at most 200 characters), which would make Stripe drop it silently.
    """
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,200}", reference):
        raise ValueError(f"client_reference_id {reference!r} breaks Stripe's rule")
    parts = urlsplit(base_url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "client_reference_id"]
    query.append(("client_reference_id", reference))
    return urlunsplit(parts._replace(query=urlencode(query)))


def construct_event(payload: bytes, sig_header: str | None, secret: str) -> dict[str, Any]:
    """Verify a webhook request and return its event as plain JSON data.

    Args:
        payload: The raw request body, exactly as received.
        sig_header: The ``Stripe-Signature`` header.
        secret: The endpoint's signing secret (``whsec_...``).

    Returns:
        The event: a dict with at least ``id`` (``evt_...``), ``type``,
        ``created`` (Unix seconds) and ``data.object`` (a dict).

    Raises:
        WebhookPayloadError: no or a wrong signature, a timestamp older than 300 s,
            a body that is not JSON, or JSON that is not a Stripe event.
    """
    if not sig_header:
        raise WebhookPayloadError("missing Stripe-Signature header")
    try:
        stripe.Webhook.construct_event(payload, sig_header, secret)
    except stripe.SignatureVerificationError as error:
        raise WebhookPayloadError(f"Stripe-Signature does not verify: {error}") from error
    except ValueError as error:  # json.JSONDecodeError, UnicodeDecodeError
        raise WebhookPayloadError("body is not JSON") from error
    except (TypeError, AttributeError, KeyError) as error:
        raise WebhookPayloadError("body is not a Stripe event") from error
    # Parsed again as plain data: stripe.Event objects shadow dict methods with
    # Stripe field names (a subscription's ``items``).
    event = json.loads(payload)
    _check_envelope(event)
    return event


def _check_envelope(event: Any) -> None:
    if not isinstance(event, dict):
        raise WebhookPayloadError("body is not a Stripe event (not a JSON object)")
    if not (isinstance(event.get("id"), str) and _EVENT_ID_RE.fullmatch(event["id"])):
        raise WebhookPayloadError("event has no id of the form evt_... (at most 255 characters)")
    if not isinstance(event.get("type"), str) or not _EVENT_TYPE_RE.fullmatch(event["type"]):
        raise WebhookPayloadError("event has no type of the form a.b_c (at most 100 characters)")
    created = event.get("created")
    if not isinstance(created, int) or isinstance(created, bool):
        raise WebhookPayloadError("event has no integer created")
    if not 0 <= created <= _LATEST_TIMESTAMP:
        raise WebhookPayloadError("event created is not a time (Unix seconds, 1970 to 9999)")
    data = event.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        raise WebhookPayloadError("event has no data.object")


class StripeGateway:
    """The Stripe API calls of the paywall, through one `stripe.StripeClient`.

    Args:
        secret_key: ``STRIPE_SECRET_KEY`` (``sk_...`` or a restricted ``rk_...``).
        api_base: Another API address (``STRIPE_API_BASE``, tests only).
        timeout: Seconds per call.
        max_network_retries: The library's own retries (0: a turn cannot wait).
    """

    def __init__(
        self,
        secret_key: str,
        *,
        api_base: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_network_retries: int = 0,
    ) -> None:
        self.client = StripeClient(
            secret_key,
            base_addresses={"api": api_base.rstrip("/")} if api_base else None,
            http_client=RequestsClient(timeout=timeout),
            max_network_retries=max_network_retries,
        )

    def create_customer(self, phone: str, contact_id: int) -> str:
        """Create a Customer with the contact's phone; returns its ``cus_...`` id.

        Raises:
            EntitlementError: Stripe refused or could not be reached.
        """
        customer = self._call(
            "create a customer",
            self.client.v1.customers.create,
            {"phone": phone, "metadata": {"parley_contact_id": str(contact_id)}},
        )
        return str(customer["id"])

    def create_checkout_session(
        self,
        *,
        phone: str,
        contact_id: int,
        price_id: str,
        success_url: str,
        cancel_url: str,
        customer_id: str | None = None,
    ) -> CheckoutLink:
        """A subscription Checkout Session for one contact, phone prefilled.

        The contact's Customer (`customer_id`, or a new one with the phone) is
        passed as ``customer``, so Checkout prefills the phone field it collects;
        ``client_reference_id`` carries the phone's digits, so the completed
        session names the contact even without a Customer lookup.

        Args:
            phone: The contact's E.164 number.
            contact_id: Our id for the contact (Customer metadata).
            price_id: ``STRIPE_PRICE_ID``, a recurring Price.
            success_url: Where Checkout sends the contact after paying.
            cancel_url: Where the back link leads.
            customer_id: The contact's Customer, when one exists.

        Raises:
            EntitlementError: Stripe refused or could not be reached.
        """
        reference = client_reference_id(phone)
        customer_id = customer_id or self.create_customer(phone, contact_id)
        session = self._call(
            "create a Checkout Session",
            self.client.v1.checkout.sessions.create,
            {
                "mode": "subscription",
                "line_items": [{"price": price_id, "quantity": 1}],
                "customer": customer_id,
                "client_reference_id": reference,
                "phone_number_collection": {"enabled": True},
                "success_url": success_url,
                "cancel_url": cancel_url,
                "metadata": {"parley_contact_id": str(contact_id)},
            },
        )
        return CheckoutLink(
            session_id=str(session["id"]), url=str(session["url"]), customer_id=customer_id
        )

    def create_portal_session(self, customer_id: str, return_url: str | None) -> str:
        """The URL of a customer-portal session (manage or cancel the subscription).

        Raises:
            EntitlementError: Stripe refused (e.g. no portal configuration saved in
                the Dashboard) or could not be reached.
        """
        params: dict[str, Any] = {"customer": customer_id}
        if return_url:
            params["return_url"] = return_url
        session = self._call(
            "create a customer-portal session",
            self.client.v1.billing_portal.sessions.create,
            params,
        )
        return str(session["url"])

    def customer_phone(self, customer_id: str) -> str | None:
        """The phone saved on a Customer, or None (none saved, or the Customer is deleted).

        Raises:
            EntitlementError: Stripe refused or could not be reached.
        """
        customer = self._call(
            "read a customer", lambda: self.client.v1.customers.retrieve(customer_id)
        )
        if customer.get("deleted"):
            return None
        phone = customer.get("phone")
        return str(phone) if phone else None

    def _call(self, what: str, method: Any, params: dict[str, Any] | None = None) -> Any:
        try:
            return method(params) if params is not None else method()
        except stripe.StripeError as error:
            detail = error.user_message or type(error).__name__
            status = f" (HTTP {error.http_status})" if error.http_status else ""
            raise EntitlementError(f"Stripe could not {what}{status}: {detail}") from error
