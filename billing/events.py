"""Apply one Stripe event to the entitlements, whatever order events arrive in.

Rules (Stripe delivers at least once, in no guaranteed order; Stripe docs,
"Receive Stripe events in your webhook endpoint"):

- An event of a subscription older (``created``) than the last one applied to it
  changes nothing. Two events of the same second: a subscription event wins
  unless it would move the subscription back to an earlier stage
  (`billing.stripe_objects.STATUS_STAGE`); an invoice event, an inference, loses.
- ``canceled`` and ``incomplete_expired`` are final for a subscription.
- News of another subscription never locks out a contact whose current one lets
  them in (a late ``deleted`` of an old subscription after a new one began).
- ``invoice.paid`` makes a subscription ``active`` (Stripe docs, "Using webhooks
  with subscriptions": provision access on ``invoice.paid``) and extends its
  period; ``invoice.payment_failed`` of a renewal makes it ``past_due`` (the
  first invoice's failure leaves it ``incomplete``).
- A subscription seen before its customer is linked to a contact is kept in a
  row without a contact; ``checkout.session.completed`` links it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from billing.stripe_objects import (
    GRANTING_STATUSES,
    STATUS_STAGE,
    TERMINAL_STATUSES,
    aware,
    read_checkout_session,
    read_invoice,
    read_subscription,
    timestamp,
)
from integrations.stripe import phone_from_reference
from integrations.twilio import parse_address
from models.billing import Entitlement, EntitlementChange, PaymentLink, StripeEvent
from models.store import SqlStore

if TYPE_CHECKING:
    from billing.paywall import Billing

log = logging.getLogger("parley.billing")

# What a phone typed in the Dashboard may carry besides digits: "+1 (555) 123-4567".
_PHONE_PUNCTUATION_RE = re.compile(r"[\s().-]")


def claim_event(session: Session, event: Mapping[str, Any], now: dt.datetime) -> StripeEvent:
    """Store the event if new, then lock its row (a concurrent delivery waits here).

    Returns:
        The row; ``processed_at`` is set when the event was processed before.
    """
    session.execute(
        _insert(session, StripeEvent)
        .values(id=event["id"], type=event["type"], created=event["created"], received_at=now)
        .on_conflict_do_nothing(index_elements=["id"])
    )
    return session.scalars(
        sa.select(StripeEvent)
        .where(StripeEvent.id == event["id"])
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()


def store_failure(
    session: Session, event: Mapping[str, Any], message: str, now: dt.datetime
) -> None:
    """Record why an event failed, leaving it unprocessed (Stripe retries it)."""
    message = message[:2000]
    session.execute(
        _insert(session, StripeEvent)
        .values(
            id=event["id"],
            type=event["type"],
            created=event["created"],
            received_at=now,
            error=message,
        )
        .on_conflict_do_update(index_elements=["id"], set_={"error": message})
    )


def _insert(session: Session, table: Any) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


class EventApplier:
    """Applies one event; remembers who was entitled before, to tell who now is.

    Args:
        billing: The service (session, clock, Stripe gateway).
        event: The verified event (``id``, ``type``, ``created``, ``data.object``).
    """

    def __init__(self, billing: Billing, event: Mapping[str, Any]) -> None:
        self.billing = billing
        self.session = billing.session
        self.event_id: str = event["id"]
        self.type: str = event["type"]
        self.created: int = event["created"]
        self.at = timestamp(self.created)
        self.object: Mapping[str, Any] = event["data"]["object"]
        self._before: dict[int, bool] = {}
        self._touched: list[Entitlement] = []

    def apply(self) -> str:
        """Apply the event; returns what was done (``applied``, ``stale``, ``unhandled``...)."""
        handlers: dict[str, Callable[[], str]] = {
            "checkout.session.completed": self._checkout_completed,
            "customer.subscription.created": self._subscription,
            "customer.subscription.updated": self._subscription,
            "customer.subscription.deleted": self._subscription,
            "invoice.paid": self._invoice_paid,
            "invoice.payment_failed": self._invoice_failed,
        }
        handler = handlers.get(self.type)
        return handler() if handler else "unhandled"

    def newly_entitled(self) -> list[int]:
        """Contacts not entitled before this event and entitled after it."""
        contact_ids: list[int] = []
        for row in self._touched:
            contact_id = row.contact_id
            if contact_id is None or contact_id in contact_ids:
                continue
            if not self._before.get(contact_id, False) and self.billing.grants(row):
                contact_ids.append(contact_id)
        return contact_ids

    # Handlers.

    def _subscription(self) -> str:
        state = read_subscription(self.object, deleted=self.type.endswith(".deleted"))
        row = self._find(state.subscription_id, state.customer_id)
        return self._apply(row, state.subscription_id, state.status, state.period_end, True)

    def _invoice_paid(self) -> str:
        facts = read_invoice(self.object)
        if facts.subscription_id is None:
            return "no_subscription"
        row = self._find(facts.subscription_id, facts.customer_id)
        same = row.stripe_subscription_id in (None, facts.subscription_id)
        status = row.status if same and row.status in GRANTING_STATUSES else "active"
        ends = [facts.period_end, aware(row.current_period_end) if same else None]
        period_end = max((end for end in ends if end is not None), default=None)
        return self._apply(row, facts.subscription_id, status, period_end, False)

    def _invoice_failed(self) -> str:
        facts = read_invoice(self.object)
        if facts.subscription_id is None:
            return "no_subscription"
        if facts.billing_reason == "subscription_create":
            return "first_invoice"  # the subscription stays incomplete
        row = self._find(facts.subscription_id, facts.customer_id)
        same = row.stripe_subscription_id in (None, facts.subscription_id)
        if same and row.status not in ("none", *GRANTING_STATUSES):
            return "unchanged"
        return self._apply(row, facts.subscription_id, "past_due", None, False)

    def _checkout_completed(self) -> str:
        facts = read_checkout_session(self.object)
        phone = phone_from_reference(facts.client_reference_id) or _e164(facts.phone)
        if phone is None and facts.customer_id:
            phone = _e164(self.billing.gateway.customer_phone(facts.customer_id))
        if phone is None:
            log.warning("billing.checkout.unlinked session=%s: no phone found", facts.session_id)
            return "unlinked"
        contact_id = SqlStore(self.session).upsert_contact(phone, None)
        self._link(contact_id, facts.customer_id)
        self.session.execute(
            sa.update(PaymentLink)
            .where(PaymentLink.contact_id == contact_id, PaymentLink.paid_at.is_(None))
            .values(paid_at=self.at)
        )
        return "linked"

    # Rows.

    def _touch(self, row: Entitlement) -> None:
        """Note a row about to change (call before changing it)."""
        if row.contact_id is not None and row.contact_id not in self._before:
            self._before[row.contact_id] = self.billing.grants(row)
        if row not in self._touched:
            self._touched.append(row)

    def _find(self, subscription_id: str, customer_id: str | None) -> Entitlement:
        """The row of this subscription, else of this customer, else a new unlinked row."""
        row = self.session.scalars(
            sa.select(Entitlement)
            .where(Entitlement.stripe_subscription_id == subscription_id)
            .order_by(Entitlement.contact_id.is_(None), Entitlement.id)
            .with_for_update()
        ).first()
        if row is None and customer_id:
            row = self.session.scalars(
                sa.select(Entitlement)
                .where(Entitlement.stripe_customer_id == customer_id)
                .with_for_update()
            ).first()
        if row is None:
            row = Entitlement(contact_id=None, stripe_customer_id=customer_id, status="none")
            self.session.add(row)
            self.session.flush()
        self._touch(row)
        return row

    def _apply(
        self,
        row: Entitlement,
        subscription_id: str,
        status: str,
        period_end: dt.datetime | None,
        authoritative: bool,
    ) -> str:
        """Apply a subscription's status if the ordering rules allow it."""
        if row.stripe_subscription_id not in (None, subscription_id):
            if self.billing.grants(row) and status not in GRANTING_STATUSES:
                return "other_subscription"
        else:
            if row.status in TERMINAL_STATUSES and status != row.status:
                return "final"
            last = row.last_event_created
            if last is not None and self.created < last:
                return "stale"
            if last is not None and self.created == last:
                backwards = STATUS_STAGE.get(status, 3) < STATUS_STAGE.get(row.status, 3)
                if not authoritative or backwards:
                    return "stale"
        self._set(row, subscription_id, status, period_end)
        return "applied"

    def _set(
        self,
        row: Entitlement,
        subscription_id: str,
        status: str,
        period_end: dt.datetime | None,
    ) -> None:
        old_status, old_end = row.status, aware(row.current_period_end)
        switching = row.stripe_subscription_id != subscription_id
        row.stripe_subscription_id = subscription_id
        row.status = status
        if period_end is not None or switching:
            row.current_period_end = period_end
        if status != "past_due":
            row.past_due_since = None
        elif old_status != "past_due" or switching or row.past_due_since is None:
            row.past_due_since = self.at
        row.last_event_created = self.created
        if old_status != status or old_end != aware(row.current_period_end):
            self._record(row, old_status)

    def _record(self, row: Entitlement, old_status: str) -> None:
        self.session.add(
            EntitlementChange(
                entitlement_id=row.id,
                stripe_event_id=self.event_id,
                old_status=old_status,
                new_status=row.status,
                current_period_end=row.current_period_end,
                at=self.billing.clock.now(),
            )
        )

    def _link(self, contact_id: int, customer_id: str | None) -> None:
        """Make `customer_id` the contact's Stripe customer, adopting its unlinked row."""
        mine = self.billing.entitlement(contact_id, for_update=True)
        self._before.setdefault(contact_id, mine is not None and self.billing.grants(mine))
        theirs = None
        if customer_id:
            theirs = self.session.scalars(
                sa.select(Entitlement)
                .where(Entitlement.stripe_customer_id == customer_id)
                .with_for_update()
            ).first()
        if theirs is not None and theirs.contact_id not in (None, contact_id):
            log.warning(
                "billing.checkout.customer_elsewhere contact=%s owner=%s: left as is",
                contact_id,
                theirs.contact_id,
            )
            return
        if theirs is None or theirs is mine:
            if mine is None:
                mine = Entitlement(contact_id=contact_id, status="none")
                self.session.add(mine)
            if customer_id:
                mine.stripe_customer_id = customer_id
            self.session.flush()
            self._touch(mine)
            return
        if mine is None:
            theirs.contact_id = contact_id
            self.session.flush()
            self._touch(theirs)
            return
        self._merge(mine, theirs)

    def _merge(self, mine: Entitlement, theirs: Entitlement) -> None:
        """Fold an unlinked row into the contact's row (a second checkout of a contact)."""
        self._touch(mine)
        self.session.execute(
            sa.update(EntitlementChange)
            .where(EntitlementChange.entitlement_id == theirs.id)
            .values(entitlement_id=mine.id)
        )
        take = theirs.stripe_subscription_id is not None and (
            self.billing.grants(theirs) or not self.billing.grants(mine)
        )
        fields = {
            "stripe_subscription_id": theirs.stripe_subscription_id,
            "status": theirs.status,
            "current_period_end": theirs.current_period_end,
            "past_due_since": theirs.past_due_since,
            "last_event_created": theirs.last_event_created,
        }
        customer_id = theirs.stripe_customer_id
        if theirs in self._touched:
            self._touched.remove(theirs)
        self.session.delete(theirs)
        self.session.flush()  # frees the customer id for `mine` (it is unique)
        mine.stripe_customer_id = customer_id
        if take:
            old_status = mine.status
            for name, value in fields.items():
                setattr(mine, name, value)
            self._record(mine, old_status)
        self.session.flush()


def _e164(phone: str | None) -> str | None:
    """A phone from Stripe as E.164, or None when it is not one."""
    if not phone:
        return None
    try:
        return parse_address(_PHONE_PUNCTUATION_RE.sub("", phone))[1]
    except ValueError:
        return None
