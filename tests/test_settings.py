"""The settings: one typed object, parsed once from the environment and overrides."""

from __future__ import annotations

import pytest

from config import ConfigError, Settings, load_settings


def test_environment_is_read_and_overrides_win(monkeypatch):
    monkeypatch.setenv("OPENAI_MODEL", "gpt-4.1-mini")
    monkeypatch.setenv("PUBLIC_BASE_URL", "")
    monkeypatch.setenv("TURN_LEASE_SECONDS", "30")
    monkeypatch.setenv("UNRELATED", "x")

    settings = load_settings({"TWILIO_AUTH_TOKEN": "t", "TURN_LEASE_SECONDS": "6", "TESTING": True})

    assert settings.openai_model == "gpt-4.1-mini"
    assert settings.public_base_url is None  # empty counts as unset
    assert settings.turn_lease_seconds == 6.0  # the override wins, typed
    assert settings.twilio_auth_token.get_secret_value() == "t"
    assert settings.openai_timeout == 6.0 and settings.openai_max_retries == 1  # defaults
    assert not hasattr(settings, "unrelated") and not hasattr(settings, "testing")


@pytest.mark.parametrize("value", ["1", "true", "on", "yes", "TRUE", " Yes ", True])
def test_flags_accept_todays_spellings_of_on(value):
    assert load_settings({"PAYWALL_ENABLED": value}).paywall_enabled is True


@pytest.mark.parametrize("value", ["0", "false", "off", "no", "No", "", None, False])
def test_flags_accept_todays_spellings_of_off(value):
    assert load_settings({"PAYWALL_ENABLED": value}).paywall_enabled is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PAYWALL_ENABLED", "maybe"),
        ("PAYWALL_ENABLED", "y"),  # pydantic's own spellings are not ours
        ("TURN_LEASE_SECONDS", "soon"),
        ("TURN_LEASE_SECONDS", "0"),
        ("OPENAI_MAX_RETRIES", "1.5"),
        ("DATABASE_POOL_SIZE", "0"),
        ("PAYWALL_GRACE_DAYS", "400"),
        ("HANDOVER_EXPIRED_TO", "next"),
    ],
)
def test_a_malformed_value_is_named(monkeypatch, name, value):
    with pytest.raises(ConfigError) as raised:
        load_settings({name: value})
    assert raised.value.variables == [name]
    assert f"{name}={value!r}" in str(raised.value)

    monkeypatch.setenv(name, value)  # the same from the environment
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert raised.value.variables == [name]


def test_every_malformed_value_is_named_at_once():
    with pytest.raises(ConfigError) as raised:
        load_settings({"TESTING": True, "OPENAI_TIMEOUT": "-1", "SWEEP_INTERVAL_SECONDS": "x"})
    assert raised.value.variables == ["SWEEP_INTERVAL_SECONDS", "OPENAI_TIMEOUT"]


def test_secrets_stay_out_of_reprs_logs_and_errors():
    secret = "sk_live_do_not_print_me"
    settings = load_settings({"STRIPE_SECRET_KEY": secret, "TWILIO_AUTH_TOKEN": secret})
    assert secret not in repr(settings)
    assert secret not in str(settings)
    assert secret not in settings.model_dump_json()
    assert settings.stripe_secret_key.get_secret_value() == secret
    with pytest.raises(ConfigError) as raised:
        load_settings({"DATABASE_URL": 42, "TURN_LEASE_SECONDS": "soon"})
    assert "42" not in str(raised.value)  # a secret's malformed value is not shown either


def test_every_setting_is_documented_under_its_variable_name():
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no docstring"
        assert field.description.startswith(f"``{name.upper()}``"), name
