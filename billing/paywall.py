"""The paywall: entitlements kept in sync from Stripe, payment links, the runtime switch.

`Billing` works inside the caller's transaction (the caller commits), like
`models.store.SqlStore`. `SqlEntitlements` is the `engine.ports.Entitlements` the
runner asks before a paywalled step.

Parley sells one subscription (``STRIPE_PRICE_ID`` or ``STRIPE_PAYMENT_LINK_URL``):
every entitlement name a flow uses (``subscription``...) is satisfied by it.

Sources:
    - Checkout Sessions expire 24 hours after creation by default (Stripe API
      reference, ``expires_at``); Payment Links do not expire.
    - Stripe webhooks are delivered at least once and in no guaranteed order
      (Stripe docs, "Receive Stripe events in your webhook endpoint": handle
      duplicate events; event ordering is not guaranteed).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from billing.events import EventApplier, claim_event, store_failure
from billing.stripe_objects import GRANTING_STATUSES, aware
from config import ConfigError, Settings, reveal
from engine.ports import Clock, Contact, EntitlementCheck, EntitlementError, SystemClock
from integrations.stripe import StripeGateway, client_reference_id, payment_link_url
from models.billing import Entitlement, PaymentLink, Setting, SettingChange
from models.entities import Contact as ContactRow

log = logging.getLogger("parley.billing")

PAYWALL_SETTING = "paywall_enabled"
"""The `Setting` key of the runtime switch (``on`` or ``off``)."""

REMINDER_INTERVAL = dt.timedelta(hours=24)
"""A payment link is sent to a contact at most once in this interval."""

CHECKOUT_REUSE = dt.timedelta(hours=23)
"""An unpaid Checkout Session is offered again for this long: Stripe expires it
after 24 h, and a contact who gets it late still has an hour to pay."""

PAYMENT_LINK_REUSE = dt.timedelta(hours=24)
"""An unpaid Payment Link row is reused for this long (the link itself never expires)."""


def missing_stripe_settings(settings: Settings) -> list[str]:
    """The Stripe settings the paywall needs that are not set.

    Args:
        settings: The app's settings.

    Returns:
        Variable names, e.g. ``["STRIPE_SECRET_KEY", "STRIPE_PRICE_ID or
        STRIPE_PAYMENT_LINK_URL"]``; empty when the paywall can run.
    """
    missing = []
    if settings.stripe_secret_key is None:
        missing.append("STRIPE_SECRET_KEY")
    if settings.stripe_webhook_secret is None:
        missing.append("STRIPE_WEBHOOK_SECRET")
    if not (settings.stripe_price_id or settings.stripe_payment_link_url):
        missing.append("STRIPE_PRICE_ID or STRIPE_PAYMENT_LINK_URL")
    elif settings.stripe_price_id and not (settings.stripe_success_url or settings.public_base_url):
        # Checkout requires a success URL (Stripe API reference, ``success_url``).
        missing.append("STRIPE_SUCCESS_URL or PUBLIC_BASE_URL")
    return missing


def validate_billing_config(settings: Settings) -> None:
    """Startup checks of the paywall settings (their types are checked by `config.Settings`).

    Raises:
        ConfigError: the paywall is on and a Stripe setting it needs is missing (named).
    """
    missing = missing_stripe_settings(settings) if settings.paywall_enabled else []
    if missing:
        raise ConfigError(
            f"PAYWALL_ENABLED is on but Stripe settings are missing: {'; '.join(missing)}. "
            "Set them, or switch the paywall off (PAYWALL_ENABLED=0).",
            missing,
        )


@dataclass(frozen=True)
class EventOutcome:
    """What handling one Stripe event did.

    Attributes:
        duplicate: The event id was already processed: nothing was done.
        entitled_contact_ids: Contacts who went from not entitled to entitled.
        action: ``applied``, ``stale``, ``linked``, ``unhandled``... (for logs and tests).
    """

    duplicate: bool = False
    entitled_contact_ids: list[int] = field(default_factory=list)
    action: str = "applied"


class Billing:
    """The paywall's state, read and changed inside the caller's transaction.

    Args:
        session: The SQLAlchemy session; the caller commits or rolls back.
        settings: The app's settings (Stripe's, the paywall's, ``PUBLIC_BASE_URL``).
        clock: The time source.
        gateway: The Stripe API; built from ``STRIPE_SECRET_KEY`` when first needed.
    """

    def __init__(
        self,
        session: Session,
        settings: Settings,
        clock: Clock | None = None,
        gateway: StripeGateway | None = None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.clock = clock or SystemClock()
        self._gateway = gateway

    @property
    def gateway(self) -> StripeGateway:
        """The Stripe API client.

        Raises:
            EntitlementError: ``STRIPE_SECRET_KEY`` is not set.
        """
        if self._gateway is None:
            key = reveal(self.settings.stripe_secret_key)
            if not key:
                raise EntitlementError("STRIPE_SECRET_KEY is not set")
            self._gateway = StripeGateway(key, api_base=self.settings.stripe_api_base)
        return self._gateway

    # The switch.

    def paywall_enabled(self) -> bool:
        """Whether the paywall is on: the database switch when set, else ``PAYWALL_ENABLED``.

        Read on every call, so ``flask paywall on`` applies to the next turn.
        """
        value = self.session.scalar(sa.select(Setting.value).where(Setting.key == PAYWALL_SETTING))
        if value is not None:
            return value == "on"
        return self.settings.paywall_enabled

    def paywall_setting(self) -> Setting | None:
        """The database switch, or None when only ``PAYWALL_ENABLED`` decides."""
        return self.session.get(Setting, PAYWALL_SETTING)

    def set_paywall(self, enabled: bool, who: str) -> None:
        """Switch the paywall on or off at runtime, recording who did it and when.

        Raises:
            ConfigError: switching on while a Stripe setting it needs is missing
                (``variables`` names them); nothing is stored.
        """
        missing = missing_stripe_settings(self.settings) if enabled else []
        if missing:
            raise ConfigError(
                "cannot switch the paywall on: Stripe settings are missing: "
                f"{'; '.join(missing)}. Set them in the environment and restart first.",
                missing,
            )
        now = self.clock.now()
        new = "on" if enabled else "off"
        row = self.session.get(Setting, PAYWALL_SETTING, with_for_update=True)
        old = row.value if row else None
        if row is None:
            row = Setting(key=PAYWALL_SETTING)
            self.session.add(row)
        row.value, row.updated_by, row.updated_at = new, who, now
        self.session.add(
            SettingChange(key=PAYWALL_SETTING, old=old, new=new, changed_by=who, at=now)
        )
        self.session.flush()
        log.info("paywall.switched enabled=%s by=%s", enabled, who)

    # Entitlements.

    def entitlement(self, contact_id: int, *, for_update: bool = False) -> Entitlement | None:
        """The contact's entitlement row, or None."""
        query = sa.select(Entitlement).where(Entitlement.contact_id == contact_id)
        if for_update:
            query = query.with_for_update()
        return self.session.scalars(query).first()

    def grants(self, entitlement: Entitlement) -> bool:
        """Whether this row lets its contact in: ``active`` or ``trialing``, or
        ``past_due`` for less than ``PAYWALL_GRACE_DAYS`` since it became so."""
        if entitlement.status in GRANTING_STATUSES:
            return True
        since = aware(entitlement.past_due_since)
        if entitlement.status == "past_due" and since is not None:
            grace = dt.timedelta(days=self.settings.paywall_grace_days)
            return self.clock.now() < since + grace
        return False

    def is_entitled(self, contact_id: int) -> bool:
        """Whether the store lets the contact in (whatever the switch says)."""
        entitlement = self.entitlement(contact_id)
        return entitlement is not None and self.grants(entitlement)

    def studio_status(self, phone: str) -> dict[str, Any]:
        """The answer of ``POST /studio/entitlement``.

        Returns:
            ``{"has_account": bool, "is_active": bool, "status": str}``:
            ``has_account`` is whether Parley knows the contact; with the paywall
            off, ``is_active`` is True and ``status`` ``active`` for everyone.
        """
        contact_id = self.session.scalar(sa.select(ContactRow.id).where(ContactRow.phone == phone))
        has_account = contact_id is not None
        if not self.paywall_enabled():
            return {"has_account": has_account, "is_active": True, "status": "active"}
        entitlement = self.entitlement(contact_id) if contact_id is not None else None
        return {
            "has_account": has_account,
            "is_active": entitlement is not None and self.grants(entitlement),
            "status": entitlement.status if entitlement else "none",
        }

    def is_billing_keyword(self, text: str) -> bool:
        """Whether a message asks for the customer portal (``BILLING_KEYWORD``, any case)."""
        keyword = self.settings.billing_keyword.strip().casefold()
        return bool(keyword) and text.strip().casefold() == keyword

    def portal_url(self, contact_id: int) -> str | None:
        """A customer-portal link for the contact to manage or cancel, or None
        when the contact has no Stripe customer yet.

        Raises:
            EntitlementError: Stripe could not be reached or refused.
        """
        entitlement = self.entitlement(contact_id)
        if entitlement is None or not entitlement.stripe_customer_id:
            return None
        return self.gateway.create_portal_session(
            entitlement.stripe_customer_id, self._return_url("portal")
        )

    # Payment links.

    def payment_link(self, contact: Contact) -> tuple[PaymentLink, bool]:
        """The contact's payment link, and whether to send it now.

        Reuses an unpaid link of the same kind made recently (`CHECKOUT_REUSE`,
        `PAYMENT_LINK_REUSE`), else makes one. The link is to be sent when none
        was sent in the last 24 h; then ``sent_at`` is recorded.

        Raises:
            EntitlementError: Stripe could not make a Checkout Session, or no way
                to pay is configured.
        """
        now = self.clock.now()
        checkout = bool(self.settings.stripe_price_id)
        reuse = CHECKOUT_REUSE if checkout else PAYMENT_LINK_REUSE
        unpaid = self.session.scalars(
            sa.select(PaymentLink)
            .where(PaymentLink.contact_id == contact.id, PaymentLink.paid_at.is_(None))
            .order_by(PaymentLink.created_at.desc(), PaymentLink.id.desc())
            .with_for_update()
        ).all()
        link = next(
            (
                row
                for row in unpaid
                if (row.checkout_session_id is not None) == checkout
                and aware(row.created_at) > now - reuse  # type: ignore[operator]
            ),
            None,
        )
        if link is None:
            link = self._new_link(contact, now, checkout)
            self.session.add(link)
        sent = [aware(row.sent_at) for row in unpaid if row.sent_at is not None]
        last_sent = max(sent, default=None)
        remind = last_sent is None or now - last_sent >= REMINDER_INTERVAL
        if remind:
            link.sent_at = now
        self.session.flush()
        return link, remind

    def _new_link(self, contact: Contact, now: dt.datetime, checkout: bool) -> PaymentLink:
        if not checkout:
            base = self.settings.stripe_payment_link_url
            if not base:
                raise EntitlementError("set STRIPE_PRICE_ID or STRIPE_PAYMENT_LINK_URL")
            url = payment_link_url(base, client_reference_id(contact.phone))
            return PaymentLink(contact_id=contact.id, url=url, created_at=now)
        success_url = self._return_url("success")
        if success_url is None:
            raise EntitlementError("set STRIPE_SUCCESS_URL or PUBLIC_BASE_URL")
        entitlement = self.entitlement(contact.id, for_update=True)
        assert self.settings.stripe_price_id is not None  # `checkout` says so
        made = self.gateway.create_checkout_session(
            phone=contact.phone,
            contact_id=contact.id,
            price_id=self.settings.stripe_price_id,
            success_url=success_url,
            cancel_url=self._return_url("cancel"),
            customer_id=entitlement.stripe_customer_id if entitlement else None,
        )
        if entitlement is None:
            self.session.add(
                Entitlement(
                    contact_id=contact.id, stripe_customer_id=made.customer_id, status="none"
                )
            )
        elif not entitlement.stripe_customer_id:
            entitlement.stripe_customer_id = made.customer_id
        log.info("billing.link.created contact=%s session=%s", contact.id, made.session_id)
        return PaymentLink(
            contact_id=contact.id,
            url=made.url,
            checkout_session_id=made.session_id,
            created_at=now,
        )

    def _return_url(self, kind: str) -> str | None:
        """Where Stripe sends the contact back: ``STRIPE_SUCCESS_URL`` /
        ``STRIPE_CANCEL_URL``, else Parley's own ``/stripe/return`` page."""
        configured = {
            "success": self.settings.stripe_success_url,
            "cancel": self.settings.stripe_cancel_url,
        }.get(kind)
        if configured:
            return configured
        base = self.settings.public_base_url
        return f"{str(base).rstrip('/')}/stripe/return?result={kind}" if base else None

    # Stripe events.

    def handle_event(self, event: Mapping[str, Any]) -> EventOutcome:
        """Apply one verified Stripe event, once per event id.

        Args:
            event: From `integrations.stripe.construct_event`.

        Raises:
            billing.stripe_objects.EventShapeError: the object lacks what its type
                promises (bad input: answer 4xx).
            EntitlementError: a Stripe API call the event needs failed (retry).
        """
        row = claim_event(self.session, event, self.clock.now())
        if row.processed_at is not None:
            log.info("billing.event.duplicate event=%s type=%s", row.id, row.type)
            return EventOutcome(duplicate=True, action="duplicate")
        applier = EventApplier(self, event)
        action = applier.apply()
        row.processed_at = self.clock.now()
        row.error = None
        self.session.flush()
        entitled = applier.newly_entitled()
        log.info(
            "billing.event.processed event=%s type=%s action=%s entitled=%s",
            row.id,
            row.type,
            action,
            entitled,
        )
        return EventOutcome(entitled_contact_ids=entitled, action=action)

    def record_failure(self, event: Mapping[str, Any], error: BaseException) -> None:
        """Store why an event failed (after the caller rolled back; the caller commits).

        The event stays unprocessed, so Stripe's retry applies it again.
        """
        store_failure(self.session, event, f"{type(error).__name__}: {error}", self.clock.now())


class SqlEntitlements:
    """`engine.ports.Entitlements` over `Billing`: who may pass a paywall, and how to pay.

    Args:
        billing: Bound to the turn's session (its transaction records ``sent_at``).
    """

    def __init__(self, billing: Billing) -> None:
        self.billing = billing

    def check(self, contact: Contact, entitlement: str) -> EntitlementCheck:
        """Entitled when the paywall is off or the store grants it; else a link to pay.

        Raises:
            EntitlementError: a payment link could not be made.
        """
        if not self.billing.paywall_enabled():
            return EntitlementCheck(entitled=True, status="active")
        row = self.billing.entitlement(contact.id)
        status = row.status if row is not None else "none"
        if row is not None and self.billing.grants(row):
            return EntitlementCheck(entitled=True, status=status)
        link, remind = self.billing.payment_link(contact)
        return EntitlementCheck(entitled=False, payment_url=link.url, remind=remind, status=status)
