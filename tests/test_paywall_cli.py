"""``flask paywall on|off|status``: the runtime switch, recorded, applied to the next turn."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa

from billing.paywall import SqlEntitlements
from engine.ports import Contact
from models import Setting, SettingChange, db
from models.store import SqlStore
from tests.stripe_events import PAYMENT_LINK_URL, stripe_settings

PHONE = "+15551230001"
TOKEN = "studio-token-9c1e5b7d"


def paywall(app, *args: str):
    return app.test_cli_runner().invoke(args=["paywall", *args])


def changes() -> list[tuple[str | None, str, str]]:
    rows = db.session.scalars(sa.select(SettingChange).order_by(SettingChange.id))
    return [(row.old, row.new, row.changed_by) for row in rows]


@pytest.fixture
def stripe_ready(app_config: dict) -> dict:
    """A deployment with Stripe set up (Payment Link mode) and the paywall off."""
    app_config.update(
        stripe_settings(
            STRIPE_PRICE_ID=None,
            STRIPE_PAYMENT_LINK_URL=PAYMENT_LINK_URL,
            STUDIO_TOKEN=TOKEN,
        )
    )
    return app_config


def test_switching_on_without_stripe_settings_fails_and_names_them(app):
    result = paywall(app, "on", "--by", "ana")

    assert result.exit_code != 0
    assert "STRIPE_SECRET_KEY" in result.output
    assert "STRIPE_PRICE_ID or STRIPE_PAYMENT_LINK_URL" in result.output
    with app.app_context():
        assert db.session.scalars(sa.select(Setting)).all() == []
        assert changes() == []


def test_switching_is_stored_logged_and_reported(stripe_ready, app, caplog):
    caplog.set_level(logging.INFO, logger="parley")

    before = paywall(app, "status")
    switched_on = paywall(app, "on", "--by", "ana")
    after = paywall(app, "status")
    switched_off = paywall(app, "off", "--by", "bo")

    assert before.output == "Paywall is off (from PAYWALL_ENABLED; never switched at runtime).\n"
    assert switched_on.exit_code == 0, switched_on.output
    assert after.output.startswith("Paywall is on (switched on by ana at ")
    assert switched_off.exit_code == 0
    assert "paywall.switched enabled=True by=ana" in caplog.text
    assert "paywall.switched enabled=False by=bo" in caplog.text
    with app.app_context():
        assert changes() == [(None, "on", "ana"), ("on", "off", "bo")]
        setting = db.session.get(Setting, "paywall_enabled")
        assert (setting.value, setting.updated_by) == ("off", "bo")


def test_who_defaults_to_the_user(stripe_ready, app, monkeypatch):
    monkeypatch.setenv("USER", "ops-oncall")
    assert paywall(app, "off").exit_code == 0
    with app.app_context():
        assert changes() == [(None, "off", "ops-oncall")]


def test_the_switch_applies_to_the_next_check_without_a_restart(stripe_ready, app, client):
    with app.app_context():
        contact = Contact(id=SqlStore(db.session).upsert_contact(PHONE, None), phone=PHONE)
        db.session.commit()

    def check():
        with app.app_context():
            entitlements = SqlEntitlements(app.extensions["parley"].billing(db.session))
            result = entitlements.check(contact, "subscription")
            db.session.commit()
            return result

    def studio():
        headers = {"Authorization": f"Bearer {TOKEN}"}
        return client.post("/studio/entitlement", data={"From": PHONE}, headers=headers).json

    assert check().entitled and studio()["is_active"]

    assert paywall(app, "on", "--by", "ana").exit_code == 0
    locked = check()
    assert (locked.entitled, locked.payment_url) == (
        False,
        f"{PAYMENT_LINK_URL}?client_reference_id=15551230001",
    )
    assert studio() == {"has_account": True, "is_active": False, "status": "none"}

    assert paywall(app, "off", "--by", "ana").exit_code == 0
    assert check().entitled and studio()["is_active"]
