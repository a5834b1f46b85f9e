"""The public API (published, redacted conversations), the internal API and the OpenAPI document."""

from __future__ import annotations

import json

import pytest
from openapi_spec_validator import validate

from app import create_app
from curation.curator import Curator
from models import db
from tests.admin_support import seed_conversation

PHONE = "+15551230001"
DIGITS = "5551230001"
TOKEN = "internal-token-3f9a1c"


@pytest.fixture
def app_config(app_config: dict) -> dict:
    app_config.update(INTERNAL_API_TOKEN=TOKEN, PUBLIC_API_CORS_ORIGINS="https://coach.example.org")
    return app_config


def publish(app, conversation_id: int, question: str = "How do I sleep better?") -> None:
    with app.app_context():
        curator = Curator(db.session, "cur@example.com")
        curator.set_summary(conversation_id, question, "Keep a routine.", "Sleep tips")
        curator.set_tags(conversation_id, ["sleep"])
        curator.set_rating(conversation_id, 5)
        curator.publish(conversation_id)
        db.session.commit()


@pytest.fixture
def seeded(app):
    """One published conversation (with a phone number in it) and one unpublished."""
    published = seed_conversation(
        app,
        PHONE,
        [
            ("I can't sleep. Text me at +1 (555) 123-0001", ["Let's build a routine."]),
            ("ok thanks", ["Good night!"]),
        ],
        name="Ana",
    )
    hidden = seed_conversation(app, "+15551239999", [("secret unpublished words", ["hi"])])
    publish(app, published)
    return published, hidden


def without_phone(response) -> str:
    text = response.get_data(as_text=True)
    assert DIGITS not in text.replace("-", "").replace(" ", "").replace("(", "").replace(")", "")
    assert "123-0001" not in text
    return text


def test_list_returns_published_conversations_only_in_the_documented_shape(client, seeded):
    published, _ = seeded
    response = client.get("/api/v1/conversations")
    assert response.status_code == 200
    without_phone(response)
    body = response.json
    assert body["pagination"] == {"page": 1, "per_page": 20, "total": 1, "total_pages": 1}
    (item,) = body["data"]
    assert item["id"] == published
    assert {k: item[k] for k in ("question", "answer", "teaser", "tags", "rating", "channel")} == {
        "question": "How do I sleep better?",
        "answer": "Keep a routine.",
        "teaser": "Sleep tips",
        "tags": ["sleep"],
        "rating": 5,
        "channel": "whatsapp",
    }
    assert item["message_count"] == 4
    assert item["agent"] == {"display_name": "Parley coach", "kind": "agent"}
    assert item["user"] == {"display_name": f"Texter {published}", "kind": "user"}
    assert set(item) == {
        "id", "question", "answer", "teaser", "tags", "rating", "channel",
        "message_count", "published_at", "started_at", "agent", "user",
    }  # fmt: skip


def test_a_conversation_and_its_messages_are_redacted(client, seeded):
    published, _ = seeded
    detail = client.get(f"/api/v1/conversations/{published}")
    assert detail.status_code == 200
    without_phone(detail)
    messages = detail.json["data"]["messages"]
    assert [(m["author"], m["text"]) for m in messages] == [
        ("user", "I can't sleep. Text me at [PHONE]"),
        ("agent", "Let's build a routine."),
        ("user", "ok thanks"),
        ("agent", "Good night!"),
    ]
    listed = client.get(f"/api/v1/messages?conversation_id={published}")
    without_phone(listed)
    assert listed.json["data"] == messages
    assert set(messages[0]) == {
        "id",
        "conversation_id",
        "author",
        "display_name",
        "text",
        "sent_at",
    }


def test_unpublished_conversations_are_never_returned(app, client, seeded):
    published, hidden = seeded
    assert client.get(f"/api/v1/conversations/{hidden}").status_code == 404
    assert client.get(f"/api/v1/messages?conversation_id={hidden}").status_code == 404
    assert client.get("/api/v1/conversations/search?query=secret").json["data"] == []
    with app.app_context():
        Curator(db.session, "cur@example.com").unpublish(published)
        db.session.commit()
    assert client.get("/api/v1/conversations").json["data"] == []
    assert client.get(f"/api/v1/conversations/{published}").status_code == 404
    assert client.get(f"/api/v1/messages?conversation_id={published}").status_code == 404


def test_a_phone_number_typed_into_a_summary_is_still_not_served(app, client, seeded):
    published, _ = seeded
    with app.app_context():
        Curator(db.session, "x").set_summary(published, f"Call {PHONE}?", "Or a@b.co", "")
        db.session.commit()
    body = without_phone(client.get("/api/v1/conversations"))
    assert "[PHONE]" in body and "[EMAIL]" in body and "a@b.co" not in body


def test_search_finds_words_of_summaries_and_redacted_messages(client, seeded):
    published, _ = seeded
    assert [c["id"] for c in client.get("/api/v1/conversations/search?query=routine").json["data"]]
    by_message = client.get("/api/v1/conversations/search?query=night").json["data"]
    assert [c["id"] for c in by_message] == [published]
    assert client.get("/api/v1/conversations/search?query=pizza").json["data"] == []
    missing = client.get("/api/v1/conversations/search")
    assert missing.status_code == 400 and "query is required" in missing.json["error"]


def test_pagination(app, client):
    ids = [seed_conversation(app, f"+1555123000{n}", [(f"hi {n}", ["hello"])]) for n in range(3)]
    for conversation_id in ids:
        publish(app, conversation_id)
    page = client.get("/api/v1/conversations?per_page=2&page=2").json
    assert page["pagination"] == {"page": 2, "per_page": 2, "total": 3, "total_pages": 2}
    assert len(page["data"]) == 1
    for bad in ("per_page=0", "per_page=101", "page=x"):
        response = client.get(f"/api/v1/conversations?{bad}")
        assert response.status_code == 400, bad
        assert response.json["error"]


def test_cors_for_the_configured_website_only(client, seeded):
    allowed = client.get("/api/v1/conversations", headers={"Origin": "https://coach.example.org"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://coach.example.org"
    other = client.get("/api/v1/conversations", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    internal = client.post(
        "/api/v1/contacts.recent-messages",
        json={"contact_id": 1},
        headers={"Origin": "https://coach.example.org", "Authorization": f"Bearer {TOKEN}"},
    )
    assert "Access-Control-Allow-Origin" not in internal.headers


def recent(client, body, token=TOKEN):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.post("/api/v1/contacts.recent-messages", json=body, headers=headers)


def test_internal_recent_messages_grouped_by_conversation_with_cursors(app, client):
    whatsapp = seed_conversation(app, PHONE, [(f"w{n}", [f"r{n}"]) for n in range(3)])
    sms = seed_conversation(app, PHONE, [("s0", ["t0"])], channel="sms")
    body = recent(client, {"phone": f"whatsapp:{PHONE}", "page_size": 4}).json
    assert [group["conversation_id"] for group in body["data"]] == [sms, whatsapp]
    group = body["data"][1]
    assert [m["content"] for m in group["messages"]] == ["r2", "w2", "r1", "w1"]
    assert group["messages"][1]["from_contact"] is True
    assert group["messages"][0]["sender"] == {"type": "bot", "id": None}
    cursor = group["pagination_data"]["next_cursor"]
    assert cursor and body["data"][0]["pagination_data"]["next_cursor"] is None

    older = recent(
        client,
        {"contact_id": body["contact_id"], "cursors": {str(whatsapp): cursor}, "page_size": 4},
    ).json
    older_group = next(g for g in older["data"] if g["conversation_id"] == whatsapp)
    assert [m["content"] for m in older_group["messages"]] == ["r0", "w0"]
    only_sms = recent(client, {"contact_id": body["contact_id"], "source": "sms"}).json
    assert [g["conversation_id"] for g in only_sms["data"]] == [sms]


def test_internal_api_needs_its_token_and_a_good_body(app, client):
    assert recent(client, {"contact_id": 1}, token=None).status_code == 401
    assert recent(client, {"contact_id": 1}, token="wrong").status_code == 401
    assert recent(client, {"contact_id": 999}).status_code == 404
    for bad in ({}, {"contact_id": "x"}, {"contact_id": 1, "page_size": 0}, {"nope": 1}):
        response = recent(client, bad)
        assert response.status_code == 400, bad
        assert response.json["error"]


def test_internal_api_is_closed_without_a_token(app_config):
    app_config["INTERNAL_API_TOKEN"] = None
    app = create_app(app_config)
    try:
        assert recent(app.test_client(), {"contact_id": 1}).status_code == 503
    finally:
        with app.app_context():
            db.engine.dispose()


def test_the_openapi_document_is_valid_and_covers_every_api_route(app, client):
    document = client.get("/api/openapi.json").json
    validate(document)
    routes = {
        rule.rule.replace("<int:conversation_id>", "{conversation_id}")
        for rule in app.url_map.iter_rules()
        if rule.rule.startswith("/api/")
    }
    assert routes == set(document["paths"])
    schemas = document["components"]["schemas"]
    assert "PublicConversation" in schemas and "RecentMessagesRequest" in schemas
    assert json.dumps(document).count("#/components/schemas/") > 5
