"""Agent apps: signed webhooks of control events and agent-time messages, and the token API."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from handover.hooks import SIGNATURE_HEADER, sign, verify
from models import User, db
from tests.admin_support import add_user
from tests.fakes.api_server import FakeAPI
from tests.test_handover import FLOW, QUESTION
from tests.twiml import messages_of

SENDER = "whatsapp:+15551230001"
SECRET = "whsec_test"
TOKEN = "agent-token"


@pytest.fixture
def hooks() -> Iterator[FakeAPI]:
    with FakeAPI() as api:
        api.answer("/hooks", {"ok": True})
        yield api


@pytest.fixture
def app_config(app_config: dict, tmp_path: Path, hooks: FakeAPI) -> dict:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "helpdesk.yaml").write_text(FLOW, encoding="utf-8")
    return {
        **app_config,
        "FLOWS_DIR": str(folder),
        "AGENT_WEBHOOK_URL": hooks.base_url + "/hooks",
        "AGENT_WEBHOOK_SECRET": SECRET,
        "AGENT_WEBHOOK_DEADLINE": "2",
        "AGENT_WEBHOOK_BACKOFF": "0.01",
        "AGENT_API_TOKEN": TOKEN,
    }


def call(client, path: str, body: dict | None = None, token: str | None = TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post(f"/api/agent/conversations/{path}", json=body, headers=headers)


def agent_id(app) -> int:
    with app.app_context():
        return db.session.scalars(sa.select(User.id)).one()


def test_an_agent_app_answers_through_the_api_and_hears_every_event(
    app, client, twilio, fake_twilio, hooks
):
    add_user(app, "sam@example.org", "agent")
    sam = agent_id(app)
    assert messages_of(twilio.say("hi", sender=SENDER).data) == [QUESTION]
    assert hooks.requests == []  # the bot has it: nothing for the agents' tools
    twilio.say("human", sender=SENDER)

    assert call(client, "1/accept", {"agent_id": sam}).get_json()["controlled_by"] == f"agent:{sam}"
    twilio.say("my order is late", sender=SENDER)
    sent = call(client, "1/messages", {"agent_id": sam, "body": "Let me check."})
    assert sent.status_code == 200 and len(sent.get_json()["message_ids"]) == 1
    assert call(client, "1/handback", {"agent_id": sam}).get_json()["controlled_by"] == "bot"
    assert messages_of(twilio.say("sleep", sender=SENDER).data) == ["Noted: sleep."]

    assert fake_twilio.bodies == ["Let me check."]
    seen = [
        (hook["json"]["type"], hook["json"].get("kind") or hook["json"].get("body"))
        for hook in hooks.requests
    ]
    assert seen == [
        ("control", "handover"),
        ("control", "handover_confirmed"),
        ("message", "my order is late"),
        ("message", "Let me check."),
        ("control", "handback"),
    ]
    for hook in hooks.requests:
        header = hook["headers"][SIGNATURE_HEADER]
        assert verify(SECRET, header, hook["body"].encode(), now=time.time())
        assert not verify("another secret", header, hook["body"].encode(), now=time.time())


def test_a_failing_hook_is_retried_and_the_turn_still_answers(app, twilio, hooks):
    hooks.answer("/hooks", {"error": "down"}, status=503)
    twilio.say("hi", sender=SENDER)
    assert messages_of(twilio.say("agent", sender=SENDER).data)  # the contact is answered
    assert len(hooks.requests) > 1
    assert {hook["json"]["kind"] for hook in hooks.requests} == {"handover"}


def test_signatures_expire_and_name_their_time():
    body = b'{"type":"control"}'
    header = sign(SECRET, 1_700_000_000, body)
    # Stripe's scheme: HMAC-SHA256 of "<timestamp>.<body>", hex.
    expected = hmac.new(SECRET.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify(SECRET, header, body, now=1_700_000_100)
    assert not verify(SECRET, header, body, now=1_700_001_000)  # a replay, later
    assert not verify(SECRET, header, body + b" ", now=1_700_000_100)
    assert not verify(SECRET, "v1=abc", body, now=1_700_000_100)


def test_the_api_needs_its_token_and_says_what_is_wrong(app, app_config, client, twilio):
    add_user(app, "sam@example.org", "agent")
    sam = agent_id(app)
    twilio.say("hi", sender=SENDER)
    assert call(client, "1/takeover", {"agent_id": sam}, token=None).status_code == 401
    assert call(client, "1/takeover", {"agent_id": sam}, token="wrong").status_code == 401
    assert call(client, "1/takeover", None).status_code == 400
    assert call(client, "1/takeover", {"agent_id": "sam"}).status_code == 400
    assert call(client, "1/takeover", {"agent_id": 999}).status_code == 404
    assert call(client, "99/takeover", {"agent_id": sam}).status_code == 404
    refused = call(client, "1/handback", {"agent_id": sam})
    assert refused.status_code == 409 and "bot already has" in refused.get_json()["error"]
    assert call(client, "1/takeover", {"agent_id": sam}).status_code == 200
    unknown_step = call(client, "1/handback", {"agent_id": sam, "step": "nowhere"})
    assert unknown_step.status_code == 409

    from app import create_app

    other = create_app({**app_config, "AGENT_API_TOKEN": None})
    try:
        assert call(other.test_client(), "1/takeover", {"agent_id": sam}).status_code == 503
    finally:
        with other.app_context():
            db.session.remove()
            db.engine.dispose()
