"""The paywall's tables: entitlements kept in sync from Stripe, events, links, settings.

Sources:
    - Subscription statuses: Stripe API reference, "The Subscription object",
      ``status``: ``incomplete``, ``incomplete_expired``, ``trialing``, ``active``,
      ``past_due``, ``canceled``, ``unpaid`` or ``paused``.
    - Event ids and ``created`` (Unix seconds): "The Event object".
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.entities import Base, Timestamp, utcnow

#: Stripe ids (``cus_...``, ``sub_...``, ``evt_...``, ``cs_...``) fit well within this.
STRIPE_ID_LENGTH = 255


class Entitlement(Base):
    """A contact's subscription state, as Stripe's webhooks last reported it.

    One row per contact. A row may exist before its contact is known (``contact_id``
    is None): Stripe often sends ``customer.subscription.created`` before
    ``checkout.session.completed``, the event that says whose customer it is; the
    row is linked to the contact when that event arrives.
    """

    __tablename__ = "entitlement"

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int | None] = mapped_column(
        sa.ForeignKey("contact.id", ondelete="CASCADE"), unique=True
    )
    stripe_customer_id: Mapped[str | None] = mapped_column(sa.String(STRIPE_ID_LENGTH), unique=True)
    """``cus_...``: the Stripe Customer paying for the contact."""
    stripe_subscription_id: Mapped[str | None] = mapped_column(
        sa.String(STRIPE_ID_LENGTH), index=True
    )
    """``sub_...``: the subscription the status belongs to."""
    status: Mapped[str] = mapped_column(sa.String(32), default="none")
    """A Stripe subscription status, or ``none`` before any subscription."""
    current_period_end: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    """End of the paid period (UTC), as the last applied event said."""
    past_due_since: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    """When the status became ``past_due`` (the grace period counts from here)."""
    last_event_created: Mapped[int | None] = mapped_column(sa.BigInteger)
    """``created`` (Unix seconds) of the last applied event of this subscription:
    an older event is stale and changes nothing."""
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow, onupdate=utcnow)


class EntitlementChange(Base):
    """One change of an entitlement's status or period (the history)."""

    __tablename__ = "entitlement_change"

    id: Mapped[int] = mapped_column(primary_key=True)
    entitlement_id: Mapped[int] = mapped_column(
        sa.ForeignKey("entitlement.id", ondelete="CASCADE"), index=True
    )
    stripe_event_id: Mapped[str | None] = mapped_column(sa.String(STRIPE_ID_LENGTH))
    """The ``evt_...`` that caused the change."""
    old_status: Mapped[str] = mapped_column(sa.String(32))
    new_status: Mapped[str] = mapped_column(sa.String(32))
    current_period_end: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class StripeEvent(Base):
    """A Stripe webhook event, stored so that each event id is processed once."""

    __tablename__ = "stripe_event"

    id: Mapped[str] = mapped_column(sa.String(STRIPE_ID_LENGTH), primary_key=True)
    """Stripe's ``evt_...``."""
    type: Mapped[str] = mapped_column(sa.String(100))
    created: Mapped[int] = mapped_column(sa.BigInteger)
    """Stripe's ``created``, Unix seconds."""
    received_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    processed_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    """None until applied: a failed event is processed again when Stripe retries."""
    error: Mapped[str | None] = mapped_column(sa.Text)
    """Why the last attempt failed, for a later look."""


class PaymentLink(Base):
    """A link an unentitled contact can pay at, and when it was last sent."""

    __tablename__ = "payment_link"

    id: Mapped[int] = mapped_column(primary_key=True)
    contact_id: Mapped[int] = mapped_column(
        sa.ForeignKey("contact.id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(sa.Text)
    checkout_session_id: Mapped[str | None] = mapped_column(sa.String(STRIPE_ID_LENGTH), index=True)
    """``cs_...`` for a Checkout Session; None for a configured Payment Link."""
    created_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
    sent_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    """When the link was last sent to the contact (reminders: at most once a day)."""
    paid_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    """When a checkout of the contact completed: the link is not offered again."""


class Setting(Base):
    """A runtime setting an admin changes without a deploy (e.g. ``paywall_enabled``)."""

    __tablename__ = "setting"

    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.Text)
    updated_by: Mapped[str] = mapped_column(sa.String(200))
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)


class SettingChange(Base):
    """Who changed a setting, when, from what to what."""

    __tablename__ = "setting_change"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(64), index=True)
    old: Mapped[str | None] = mapped_column(sa.Text)
    new: Mapped[str] = mapped_column(sa.Text)
    changed_by: Mapped[str] = mapped_column(sa.String(200))
    at: Mapped[dt.datetime] = mapped_column(Timestamp, default=utcnow)
