"""Read Stripe webhook objects of old and current API versions into small records.

Stripe changes where fields live between API versions; an endpoint receives
events in the version it was created with, so both shapes must be read:

- Subscription period: ``current_period_end`` on the subscription up to API
  2025-03-31.basil; from that version on, on each subscription item
  (``items.data[].current_period_end``).
- Invoice subscription: ``invoice.subscription`` before 2025-03-31.basil; from
  then on ``invoice.parent.subscription_details.subscription`` (and on each line,
  ``lines.data[].parent.subscription_item_details.subscription`` instead of
  ``lines.data[].subscription``).
- An invoice's own ``period_end`` is the period *billed in arrears*; the period
  paid for is on its subscription lines (``lines.data[].period.end``).

Sources: the Stripe API changelog for 2025-03-31.basil ("Removes
current_period_start and current_period_end from subscriptions", "Adds parent to
invoices"); ../shared/fixtures/stripe/ holds both shapes.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: Stripe's subscription statuses ("The Subscription object", ``status``).
SUBSCRIPTION_STATUSES = frozenset(
    {
        "incomplete",
        "incomplete_expired",
        "trialing",
        "active",
        "past_due",
        "canceled",
        "unpaid",
        "paused",
    }
)

#: Statuses that let a contact in outright; ``past_due`` does during the grace period.
GRANTING_STATUSES = frozenset({"active", "trialing"})

#: Statuses a subscription never leaves (Stripe docs, "How subscriptions work":
#: a canceled subscription cannot be reactivated; an expired incomplete one is final).
TERMINAL_STATUSES = frozenset({"canceled", "incomplete_expired"})

#: Where each status sits in a subscription's life. Only used to break a tie between
#: two events of the same second: the later stage wins (``created`` says
#: ``incomplete``, ``updated`` a moment later says ``active``).
STATUS_STAGE = {
    "none": 0,
    "incomplete": 1,
    "trialing": 2,
    "active": 3,
    "past_due": 3,
    "paused": 3,
    "unpaid": 4,
    "canceled": 5,
    "incomplete_expired": 5,
}


class EventShapeError(ValueError):
    """A signed event whose object lacks what its type promises (e.g. no ``id``)."""


@dataclass(frozen=True)
class SubscriptionState:
    """What a subscription event says.

    Attributes:
        subscription_id: ``sub_...``.
        customer_id: ``cus_...``, or None.
        status: A Stripe subscription status (unknown future ones are kept as sent).
        period_end: End of the current period, UTC, or None when absent.
    """

    subscription_id: str
    customer_id: str | None
    status: str
    period_end: dt.datetime | None


@dataclass(frozen=True)
class InvoiceFacts:
    """What an invoice event says about its subscription.

    Attributes:
        subscription_id: ``sub_...``, or None for an invoice outside subscriptions.
        customer_id: ``cus_...``, or None.
        billing_reason: ``subscription_create``, ``subscription_cycle``, ``manual``...
        period_end: End of the period its subscription lines pay for, or None.
    """

    subscription_id: str | None
    customer_id: str | None
    billing_reason: str | None
    period_end: dt.datetime | None


@dataclass(frozen=True)
class CheckoutFacts:
    """What ``checkout.session.completed`` says about who paid.

    Attributes:
        session_id: ``cs_...``.
        customer_id: ``cus_...``, or None (a payment without a Customer).
        subscription_id: ``sub_...`` in subscription mode, else None.
        client_reference_id: As set on the session or Payment Link URL, or None.
        phone: ``customer_details.phone`` (collected at checkout), or None.
    """

    session_id: str
    customer_id: str | None
    subscription_id: str | None
    client_reference_id: str | None
    phone: str | None


def aware(value: dt.datetime | None) -> dt.datetime | None:
    """A stored time as aware UTC (SQLite hands back naive datetimes)."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value


#: The last second a datetime can hold (9999-12-31T23:59:59Z).
LATEST_TIMESTAMP = 253_402_300_799


def timestamp(value: Any) -> dt.datetime | None:
    """A Stripe timestamp (Unix seconds) as an aware UTC datetime; None if absent.

    Raises:
        EventShapeError: a number before 1970 or after the year 9999.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= LATEST_TIMESTAMP:
            raise EventShapeError(f"timestamp {value} is not a time Stripe sends")
        return dt.datetime.fromtimestamp(value, dt.UTC)
    return None


#: What a Stripe object id looks like (``cus_...``, ``sub_...``): at most the column's 255.
_ID = re.compile(r"[A-Za-z0-9_]{1,255}")
#: A subscription status: Stripe's are lower-case words with ``_``; the column holds 32.
_STATUS = re.compile(r"[a-z_]{1,32}")
#: The longest ``client_reference_id`` (Stripe's rule) or phone number kept from an event.
_MAX_TEXT = 200


def _id(value: Any) -> str | None:
    """An id field, whether sent as ``"cus_..."`` or expanded as ``{"id": ...}``.

    Raises:
        EventShapeError: an id that is no Stripe id (a NUL, spaces, past 255 characters).
    """
    if isinstance(value, Mapping):
        value = value.get("id")
    if not isinstance(value, str) or not value:
        return None
    if not _ID.fullmatch(value):
        raise EventShapeError("an object id is not a Stripe id (letters, digits and _)")
    return value


def _text(value: Any, field: str) -> str | None:
    """A short text field (a reference, a phone number), or None when absent.

    Raises:
        EventShapeError: a NUL character, or past `_MAX_TEXT` characters.
    """
    if not isinstance(value, str) or not value:
        return None
    if "\x00" in value or len(value) > _MAX_TEXT:
        raise EventShapeError(f"{field}: no NUL character, at most {_MAX_TEXT} characters")
    return value


def _list(value: Any) -> list[Mapping[str, Any]]:
    """The ``data`` of a Stripe list object, keeping only objects."""
    data = value.get("data") if isinstance(value, Mapping) else None
    return [item for item in data if isinstance(item, Mapping)] if isinstance(data, list) else []


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def read_subscription(obj: Mapping[str, Any], *, deleted: bool = False) -> SubscriptionState:
    """Read a subscription object of any API version.

    Args:
        obj: ``data.object`` of a ``customer.subscription.*`` event.
        deleted: The event is ``customer.subscription.deleted``: the status is
            ``canceled`` even if the object omits it.

    Raises:
        EventShapeError: no ``sub_...`` id, or no status on a live event.
    """
    subscription_id = _id(obj.get("id"))
    if not subscription_id or not subscription_id.startswith("sub_"):
        raise EventShapeError("subscription object has no id of the form sub_...")
    status = obj.get("status")
    if not isinstance(status, str) or not status:
        if not deleted:
            raise EventShapeError(f"subscription {subscription_id} has no status")
        status = "canceled"
    if not _STATUS.fullmatch(status):
        raise EventShapeError(f"subscription {subscription_id} has a malformed status")
    period_end = timestamp(obj.get("current_period_end"))
    if period_end is None:
        ends = [timestamp(item.get("current_period_end")) for item in _list(obj.get("items"))]
        period_end = max((end for end in ends if end is not None), default=None)
    return SubscriptionState(subscription_id, _id(obj.get("customer")), status, period_end)


def read_invoice(obj: Mapping[str, Any]) -> InvoiceFacts:
    """Read an invoice object of any API version.

    Raises:
        EventShapeError: the object is not an invoice.
    """
    if not _id(obj.get("id")):
        raise EventShapeError("invoice object has no id")
    subscription_id = _id(obj.get("subscription")) or _id(
        _dig(obj, "parent", "subscription_details", "subscription")
    )
    ends = []
    for line in _list(obj.get("lines")):
        line_subscription = _id(line.get("subscription")) or _id(
            _dig(line, "parent", "subscription_item_details", "subscription")
        )
        if line_subscription is None:
            continue
        subscription_id = subscription_id or line_subscription
        if line_subscription == subscription_id:
            ends.append(timestamp(_dig(line, "period", "end")))
    reason = obj.get("billing_reason")
    return InvoiceFacts(
        subscription_id=subscription_id,
        customer_id=_id(obj.get("customer")),
        billing_reason=reason if isinstance(reason, str) else None,
        period_end=max((end for end in ends if end is not None), default=None),
    )


def read_checkout_session(obj: Mapping[str, Any]) -> CheckoutFacts:
    """Read a Checkout Session object.

    Raises:
        EventShapeError: no ``cs_...`` id.
    """
    session_id = _id(obj.get("id"))
    if not session_id or not session_id.startswith("cs_"):
        raise EventShapeError("checkout session object has no id of the form cs_...")
    return CheckoutFacts(
        session_id=session_id,
        customer_id=_id(obj.get("customer")),
        subscription_id=_id(obj.get("subscription")),
        client_reference_id=_text(obj.get("client_reference_id"), "client_reference_id"),
        phone=_text(_dig(obj, "customer_details", "phone"), "customer_details.phone"),
    )
