"""The factory, the configuration and the landing pages."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import create_app
from config import database_url
from engine.flow import FlowError
from models import db

BROKEN = """\
id: broken
start: hello
steps:
  hello:
    say: "Hi"
    next: nowhere
"""


def test_app_refuses_to_start_on_an_invalid_flow(tmp_path: Path):
    (tmp_path / "broken.yaml").write_text(BROKEN)

    with pytest.raises(FlowError) as raised:
        create_app({"TESTING": True, "FLOWS_DIR": str(tmp_path), "DATABASE_URL": "sqlite://"})

    [problem] = raised.value.problems
    assert (problem.source, problem.line, problem.step_id) == (
        str(tmp_path / "broken.yaml"),
        6,
        "hello",
    )
    assert f"{tmp_path / 'broken.yaml'}:6:" in str(raised.value)


def test_database_url_defaults_to_sqlite_and_rewrites_postgres(tmp_path: Path):
    assert database_url(None, tmp_path) == f"sqlite:///{tmp_path / 'parley.sqlite3'}"
    assert (
        database_url("postgres://u:p@db.example.com:5432/parley", tmp_path)
        == "postgresql+psycopg://u:p@db.example.com:5432/parley"
    )
    assert database_url("postgresql://h/db", tmp_path) == "postgresql+psycopg://h/db"
    assert database_url("sqlite:////tmp/x.db", tmp_path) == "sqlite:////tmp/x.db"


def test_the_factory_takes_string_overrides_and_gives_flask_only_its_own():
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": "sqlite://",
            "TURN_LEASE_SECONDS": "6",
            "OPENAI_MAX_RETRIES": "0",
            "WTF_CSRF_ENABLED": False,
        }
    )
    try:
        settings = app.extensions["parley"].settings
        assert (settings.turn_lease_seconds, settings.openai_max_retries) == (6.0, 0)
        assert app.extensions["parley"].turn_settings.lease_seconds == 6.0
        assert app.config["TESTING"] is True and app.config["WTF_CSRF_ENABLED"] is False
        assert app.config["SQLALCHEMY_DATABASE_URI"] == "sqlite://"
        assert "TURN_LEASE_SECONDS" not in app.config  # Parley reads its settings, not these
    finally:
        with app.app_context():
            db.engine.dispose()


def test_landing_page_lists_flows_and_the_webhook(client):
    page = client.get("/").get_data(as_text=True)
    assert "goal_setting" in page and "menu" in page
    assert "https://parley.example.com/twilio/messages" in page


def test_health_check_answers_ok(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok"}
