"""Login limits through the real login form: per client, per account and per both.

A guesser is slowed (429 with ``Retry-After``, whatever the password) but can
never lock the owner of an account out for long: the stored 15-minute lock-out
that any five requests used to impose is gone.
"""

from __future__ import annotations

import logging
import re
import time
import uuid

import pytest
import redis
from limits import parse_many

from app import create_app
from config import Settings
from curation.login_limits import client_address
from models import db
from tests.admin_support import PASSWORD, add_user

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
GUESSER = "203.0.113.7"
OWNER = "198.51.100.4"


def attempt(client, email: str, password: str, address: str, **headers: str):
    """Fill in and submit the login form from `address`, as a browser there would."""
    environ = {"REMOTE_ADDR": address}
    page = client.get("/admin/login", environ_base=environ, headers=headers)
    token = CSRF.search(page.get_data(as_text=True))[1]
    return client.post(
        "/admin/login",
        data={"email": email, "password": password, "csrf_token": token},
        environ_base=environ,
        headers=headers,
    )


def test_a_guesser_is_slowed_and_cannot_lock_the_owner_out(app):
    add_user(app, "ana@example.com", "admin")
    guesser, owner = app.test_client(), app.test_client()
    for _ in range(5):
        assert attempt(guesser, "ana@example.com", "wrong guess!", GUESSER).status_code == 401

    throttled = attempt(guesser, "ana@example.com", PASSWORD, GUESSER)  # even the right one
    assert throttled.status_code == 429
    assert "Too many failed attempts" in throttled.get_data(as_text=True)
    assert 1 <= int(throttled.headers["Retry-After"]) <= 60
    assert guesser.get("/admin/conversations").status_code == 302  # not logged in

    logged_in = attempt(owner, "ana@example.com", PASSWORD, OWNER)
    assert logged_in.status_code == 302
    assert owner.get("/admin/conversations").status_code == 200


def test_one_client_is_limited_over_all_accounts(app):
    add_user(app, "ana@example.com", "admin")
    guesser = app.test_client()
    for index in range(10):
        response = attempt(guesser, f"user{index}@example.com", "wrong guess!", GUESSER)
        assert response.status_code == 401, index

    assert attempt(guesser, "user99@example.com", "wrong guess!", GUESSER).status_code == 429
    assert attempt(guesser, "ana@example.com", PASSWORD, GUESSER).status_code == 429
    assert attempt(app.test_client(), "ana@example.com", PASSWORD, OWNER).status_code == 302


@pytest.fixture
def small_windows(app_config: dict) -> dict:
    """Small windows, so that a test can see them fill and empty (ask for it before `app`)."""
    app_config.update(
        LOGIN_LIMITS_PER_CLIENT="100 per minute",
        LOGIN_LIMITS_PER_ACCOUNT_CLIENT="2 per 2 seconds; 3 per hour",
        LOGIN_LIMITS_PER_ACCOUNT="6 per minute",
    )
    return app_config


def test_the_wait_grows_for_a_client_that_keeps_guessing_one_account(small_windows, app):
    add_user(app, "ana@example.com", "admin")
    guesser = app.test_client()
    for _ in range(2):
        assert attempt(guesser, "ana@example.com", "wrong guess!", GUESSER).status_code == 401
    first = attempt(guesser, "ana@example.com", "wrong guess!", GUESSER)
    assert first.status_code == 429 and int(first.headers["Retry-After"]) <= 2

    time.sleep(2.2)
    assert attempt(guesser, "ana@example.com", "wrong guess!", GUESSER).status_code == 401
    second = attempt(guesser, "ana@example.com", "wrong guess!", GUESSER)
    assert second.status_code == 429 and int(second.headers["Retry-After"]) > 3000


def test_many_clients_together_close_an_account_only_briefly(small_windows, app):
    add_user(app, "ana@example.com", "admin")
    for index in range(3):  # each stays under its own limit
        guesser = app.test_client()
        for _ in range(2):
            response = attempt(guesser, "ana@example.com", "wrong guess!", f"203.0.113.{index}")
            assert response.status_code == 401

    owner = attempt(app.test_client(), "ana@example.com", PASSWORD, OWNER)
    assert owner.status_code == 429
    assert int(owner.headers["Retry-After"]) <= 60


def test_no_single_client_can_fill_an_account_counter_with_the_defaults():
    """A client alone, at its own limits, never fills the account-wide counter."""
    per_account = parse_many(Settings.model_fields["login_limits_per_account"].default)
    mine = parse_many(Settings.model_fields["login_limits_per_client"].default) + parse_many(
        Settings.model_fields["login_limits_per_account_client"].default
    )
    for window in per_account:
        assert window.get_expiry() <= 60, "an account may be closed for a minute at most"
        allowed = min(item.amount * -(-window.get_expiry() // item.get_expiry()) for item in mine)
        assert allowed < window.amount, window


def test_clients_behind_trusted_proxies_are_told_apart():
    assert client_address("10.0.0.1", "198.51.100.4, 203.0.113.7", 1) == "203.0.113.7"
    assert client_address("10.0.0.1", "198.51.100.4, 203.0.113.7", 2) == "198.51.100.4"
    assert client_address("10.0.0.1", "198.51.100.4, 203.0.113.7", 0) == "10.0.0.1"
    assert client_address("10.0.0.1", "203.0.113.7", 2) == "10.0.0.1"  # too few entries
    assert client_address("10.0.0.1", None, 1) == "10.0.0.1"


def dispose(app) -> None:
    """Close an extra app's database connections."""
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _redis_reason() -> str | None:
    try:
        redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_connect_timeout=1).ping()
    except redis.RedisError as error:
        return f"Redis does not answer at 127.0.0.1:6379: {error}"
    return None


def test_workers_count_together_through_redis(app_config, app):
    reason = _redis_reason()
    if reason:
        pytest.skip(reason)
    email = f"{uuid.uuid4().hex[:12]}@example.com"
    add_user(app, email, "admin")
    address = f"192.0.2.{uuid.uuid4().int % 250 + 1}"
    settings = {**app_config, "REDIS_URL": "redis://127.0.0.1:6379/0"}
    workers = [create_app(settings), create_app(settings)]  # two gunicorn workers
    clients = [worker.test_client() for worker in workers]
    try:
        for index in range(5):  # the account-and-client limit: 5 per minute, on either worker
            assert attempt(clients[index % 2], email, "wrong guess!", address).status_code == 401
        assert attempt(clients[0], email, PASSWORD, address).status_code == 429
        assert attempt(clients[1], email, PASSWORD, address).status_code == 429
    finally:
        for worker in workers:
            dispose(worker)


def test_logins_go_on_when_redis_is_unreachable(app_config, app, caplog):
    add_user(app, "ana@example.com", "admin")
    broken = create_app({**app_config, "REDIS_URL": "redis://127.0.0.1:1/0"})
    try:
        with caplog.at_level(logging.ERROR, logger="parley"):
            response = attempt(broken.test_client(), "ana@example.com", PASSWORD, OWNER)
    finally:
        dispose(broken)

    assert response.status_code == 302
    assert "admin.login.limits_unavailable" in caplog.text
