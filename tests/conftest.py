"""Fixtures: the app from its factory on SQLite and PostgreSQL, a signed Twilio client,
and an OpenAI-compatible fake server the real `openai` client talks to.

Every test that uses `app` runs once on SQLite and once on PostgreSQL when one
answers on 127.0.0.1:5432 (or at ``PARLEY_TEST_POSTGRES_URL``); where none
answers, the PostgreSQL run is skipped and says why.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from flask_migrate import upgrade
from twilio.request_validator import RequestValidator
from werkzeug.serving import make_server

from app import create_app
from models import Base, db
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.twilio_server import FakeTwilio

ROOT = Path(__file__).resolve().parent.parent
AUTH_TOKEN = "test-auth-token-0123456789abcdef"
PUBLIC_BASE_URL = "https://parley.example.com"
OUR_WHATSAPP = "whatsapp:+14155238886"
ACCOUNT_SID = "AC" + "0" * 32
POSTGRES_ADMIN_URL = os.environ.get(
    "PARLEY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _postgres_reason() -> str | None:
    try:
        with psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=2):
            return None
    except psycopg.Error as error:
        return f"PostgreSQL does not answer at {POSTGRES_ADMIN_URL}: {error}".strip()


@pytest.fixture(scope="session")
def fake_openai_server() -> Iterator[FakeOpenAI]:
    """One fake OpenAI server for the session."""
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def fake_openai(fake_openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The fake OpenAI server, with an empty script and request log for this test."""
    yield fake_openai_server.reset()
    fake_openai_server.reset()


@pytest.fixture(scope="session")
def fake_twilio_server() -> Iterator[FakeTwilio]:
    """One fake Twilio REST API for the session."""
    with FakeTwilio(ACCOUNT_SID, AUTH_TOKEN) as server:
        yield server


@pytest.fixture
def fake_twilio(fake_twilio_server: FakeTwilio) -> Iterator[FakeTwilio]:
    """The fake Twilio REST API, with no messages recorded yet."""
    fake_twilio_server.reset()
    yield fake_twilio_server
    fake_twilio_server.reset()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A migrated database for the session, on each backend."""
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "parley.sqlite3"
        url = f"sqlite:///{path}"
        _migrate(url)
        yield url
        return
    reason = _postgres_reason()
    if reason:
        pytest.skip(reason)
    name = f"parley_test_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    url = POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        _migrate(url)
        yield url
    finally:
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _migrate(url: str) -> None:
    """Run the Alembic migrations, as ``flask db upgrade`` does."""
    app = create_app({"TESTING": True, "DATABASE_URL": url})
    with app.app_context():
        upgrade(directory=str(ROOT / "migrations"), revision="heads")
        db.engine.dispose()


def base_config(database_url: str, fake_openai: FakeOpenAI) -> dict:
    """The settings tests run with."""
    return {
        "TESTING": True,
        "DATABASE_URL": database_url,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "OPENAI_API_KEY": "sk-test",
        "OPENAI_BASE_URL": fake_openai.base_url,
        "OPENAI_MAX_RETRIES": "0",
        "SECRET_KEY": "test",
    }


@pytest.fixture
def app_config(
    request: pytest.FixtureRequest,
    database_url: str,
    fake_openai: FakeOpenAI,
    fake_twilio: FakeTwilio,
) -> dict:
    """Settings for `app`, by environment variable name.

    The app parses its settings once, when it is created: a test that needs
    other values marks itself ``@pytest.mark.settings(TURN_LEASE_SECONDS="1")``
    (or a module overrides this fixture); changing ``app.config`` afterwards
    changes nothing Parley reads.
    """
    marked = {}
    for marker in reversed(list(request.node.iter_markers("settings"))):
        marked.update(marker.kwargs)
    return {
        **base_config(database_url, fake_openai),
        "TWILIO_API_BASE": fake_twilio.base_url,
        **marked,
    }


@pytest.fixture
def app(app_config: dict) -> Iterator[Flask]:
    """The app from its factory, on an emptied database."""
    app = create_app(app_config)
    with app.app_context():
        _empty_tables()
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def _empty_tables() -> None:
    tables = [table.name for table in reversed(Base.metadata.sorted_tables)]
    if db.engine.dialect.name == "postgresql":
        db.session.execute(sa.text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
    else:
        for table in tables:
            db.session.execute(sa.text(f"DELETE FROM {table}"))
    db.session.commit()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of `app`."""
    return app.test_client()


@dataclass
class TwilioWebhook:
    """Posts Messaging webhooks to the app as Twilio does: form-encoded and signed."""

    client: FlaskClient
    path: str = "/twilio/messages"
    auth_token: str = AUTH_TOKEN
    sent: int = 0

    def sign(self, params: dict[str, str], path: str | None = None) -> str:
        """The ``X-Twilio-Signature`` Twilio would send for these params."""
        url = PUBLIC_BASE_URL + (path or self.path)
        return RequestValidator(self.auth_token).compute_signature(url, params)

    def form(
        self,
        body: str,
        sender: str = "whatsapp:+15551230001",
        to: str = OUR_WHATSAPP,
        message_sid: str | None = None,
        **extra: str,
    ) -> dict[str, str]:
        """A Messaging webhook form, shaped like Twilio's."""
        self.sent += 1
        sid = message_sid or "SM" + uuid.uuid4().hex
        form = {
            "MessageSid": sid,
            "SmsMessageSid": sid,
            "SmsSid": sid,
            "AccountSid": "AC" + "0" * 32,
            "From": sender,
            "To": to,
            "Body": body,
            "NumMedia": "0",
            "NumSegments": "1",
            "SmsStatus": "received",
            "ApiVersion": "2010-04-01",
        }
        if sender.startswith("whatsapp:"):
            form["WaId"] = sender.removeprefix("whatsapp:+")
        form.update(extra)
        return form

    def post(self, form: dict[str, str], signature: str | None = "sign"):
        """POST the form, signed unless `signature` is given (None: no header)."""
        headers = {}
        if signature == "sign":
            headers["X-Twilio-Signature"] = self.sign(form)
        elif signature is not None:
            headers["X-Twilio-Signature"] = signature
        return self.client.post(self.path, data=form, headers=headers)

    def say(self, body: str, sender: str = "whatsapp:+15551230001", **extra: str):
        """Send one signed message; returns the response."""
        return self.post(self.form(body, sender=sender, **extra))


@pytest.fixture
def twilio(client: FlaskClient) -> TwilioWebhook:
    """Signed Twilio webhooks against `client`."""
    return TwilioWebhook(client)


@pytest.fixture
def sqlite_only(database_url: str) -> None:
    """Skip the PostgreSQL run of a browser test (the pages' queries run on both elsewhere)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("browser tests run on SQLite only (see tests/test_admin_browser.py)")


@pytest.fixture
def live_server(app: Flask) -> Iterator[str]:
    """The app served by werkzeug on a free port of 127.0.0.1; yields its base URL."""
    httpd = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(timeout=10)
        httpd.server_close()


@pytest.fixture
def chromium() -> Iterator:
    """Chromium (CHROMIUM_PATH or the PATH), headless, through Playwright (see tests/browser.py)."""
    from tests.browser import ARGS, CHROMIUM, sync_api

    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
