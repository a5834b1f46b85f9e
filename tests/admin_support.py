"""Helpers for the admin console and API tests: users, logins and seeded transcripts."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence

from flask import Flask
from flask.testing import FlaskClient

from curation.users import create_user
from engine.ports import LLMUsage
from models import db
from models.store import OutboundPart, SqlStore

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def add_user(app: Flask, email: str, role: str, password: str = PASSWORD) -> None:
    """Create a console user."""
    with app.app_context():
        create_user(db.session, email, password, role)
        db.session.commit()


def csrf_token(client: FlaskClient, path: str = "/admin/login") -> str:
    """The CSRF token a page of the console carries."""
    page = client.get(path)
    match = _CSRF.search(page.get_data(as_text=True))
    assert match, f"no CSRF token on {path} ({page.status_code})"
    return match.group(1)


def login(client: FlaskClient, email: str, password: str = PASSWORD):
    """Log in through the form, as a browser does."""
    token = csrf_token(client)
    return client.post(
        "/admin/login", data={"email": email, "password": password, "csrf_token": token}
    )


def post(client: FlaskClient, path: str, data: dict | None = None, page: str | None = None):
    """POST a console form with the CSRF token of `page` (default: the conversations)."""
    token = csrf_token(client, page or "/admin/conversations")
    return client.post(path, data={**(data or {}), "csrf_token": token})


def seed_conversation(
    app: Flask,
    phone: str,
    turns: Sequence[tuple[str, Sequence[str]]],
    *,
    name: str | None = None,
    channel: str = "whatsapp",
    flow_id: str = "goal_setting",
    steps: Sequence[str] = (),
    usage: LLMUsage | None = None,
) -> int:
    """Store a conversation of (contact says, bot replies) turns; returns its id.

    The bot replies are stored as the runner would store them, each with the
    next step of `steps` and, when given, `usage` on LLM-like replies.
    """
    step_iter = iter(steps)
    with app.app_context():
        store = SqlStore(db.session)
        conversation_id = 0
        for text, replies in turns:
            stored = store.store_inbound(
                phone=phone,
                name=name,
                channel=channel,  # type: ignore[arg-type]
                address="whatsapp:+14155238886" if channel == "whatsapp" else "+14155238886",
                body=text,
                message_sid="SM" + uuid.uuid4().hex,
            )
            assert stored is not None
            conversation_id = stored.conversation_id
            parts = [
                OutboundPart(body=reply, step_id=next(step_iter, None), usage=usage)
                for reply in replies
            ]
            store.store_outbound(stored, parts, execution_id=None, flow_id=flow_id)
            store.finish_inbound(stored.message_id, "done", None, flow_id)
        db.session.commit()
        return conversation_id
