"""The admin console: login, roles, CSRF, transcripts and curation (limits: test_login_limits)."""

from __future__ import annotations

import sqlalchemy as sa

from engine.ports import LLMUsage
from models import AuditEvent, ConversationTag, Curation, RedactedMessage, User, db
from tests.admin_support import add_user, csrf_token, login, post, seed_conversation

PHONE = "+15551230001"


def test_logged_out_requests_are_redirected_to_the_login_page(client):
    for path in ("/admin/", "/admin/conversations", "/admin/metrics", "/admin/users"):
        response = client.get(path)
        assert response.status_code == 302, path
        assert response.headers["Location"].startswith("/admin/login?next="), path


def test_login_then_logout(app, client):
    add_user(app, "ana@example.com", "curator")
    response = login(client, "Ana@Example.com")
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/conversations"
    assert client.get("/admin/conversations").status_code == 200

    post(client, "/admin/logout")
    assert client.get("/admin/conversations").status_code == 302


def test_login_goes_back_to_the_page_asked_for_but_never_off_site(app, client):
    add_user(app, "ana@example.com", "curator")
    token = csrf_token(client)
    form = {"email": "ana@example.com", "password": "correct horse battery", "csrf_token": token}
    response = client.post("/admin/login?next=/admin/metrics", data=form)
    assert response.headers["Location"] == "/admin/metrics"
    post(client, "/admin/logout")
    token = csrf_token(client)
    response = client.post("/admin/login?next=//evil.example/x", data={**form, "csrf_token": token})
    assert response.headers["Location"] == "/admin/conversations"


def test_a_wrong_password_is_refused_and_counted(app, client):
    add_user(app, "ana@example.com", "curator")
    response = login(client, "ana@example.com", "wrong password")
    assert response.status_code == 401
    assert "Wrong e-mail or password." in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalars(sa.select(User.failed_logins)).one() == 1


def test_a_post_without_csrf_token_is_refused(app, client):
    add_user(app, "ana@example.com", "curator")
    response = client.post(
        "/admin/login", data={"email": "ana@example.com", "password": "correct horse battery"}
    )
    assert response.status_code == 400
    assert "CSRF" in response.get_data(as_text=True)
    conversation = seed_conversation(app, PHONE, [("hi", ["hello"])])
    login(client, "ana@example.com")
    response = client.post(f"/admin/conversations/{conversation}/publish", data={})
    assert response.status_code == 400


def test_a_curator_cannot_reach_admin_only_pages(app, client):
    add_user(app, "cur@example.com", "curator")
    conversation = seed_conversation(app, PHONE, [("hi", ["hello"])])
    login(client, "cur@example.com")
    assert client.get("/admin/users").status_code == 403
    with app.app_context():
        contact_id = db.session.scalar(sa.text("SELECT id FROM contact"))
    assert post(client, f"/admin/contacts/{contact_id}/erase").status_code == 403
    assert client.get(f"/admin/conversations/{conversation}").status_code == 200


def test_an_agent_reads_transcripts_but_cannot_curate(app, client):
    add_user(app, "agent@example.com", "agent")
    conversation = seed_conversation(app, PHONE, [("hi", ["hello"])])
    login(client, "agent@example.com")
    page = client.get(f"/admin/conversations/{conversation}").get_data(as_text=True)
    assert "hello" in page
    assert "Publish" not in page
    assert client.get("/admin/metrics").status_code == 403
    summary = {"question": "q", "answer": "a", "teaser": "t"}
    assert post(client, f"/admin/conversations/{conversation}/summary", summary).status_code == 403


def test_an_admin_creates_users_in_the_console(app, client):
    add_user(app, "root@example.com", "admin")
    login(client, "root@example.com")
    form = {"email": "new@example.com", "password": "long enough pw", "role": "curator"}
    response = post(client, "/admin/users", form, page="/admin/users")
    assert response.status_code == 302
    bad = post(client, "/admin/users", {**form, "password": "short"}, page="/admin/users")
    assert bad.status_code == 400
    assert "at least 10 characters" in bad.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalars(sa.select(User.email).order_by(User.email)).all() == [
            "new@example.com",
            "root@example.com",
        ]


def test_search_and_filters(app, client):
    add_user(app, "cur@example.com", "curator")
    sleepy = seed_conversation(
        app, PHONE, [("I can't sleep at night", ["Let's work on sleep"])], steps=["coach"]
    )
    walker = seed_conversation(
        app, "+15551230002", [("I want to walk more", ["Great"])], channel="sms", steps=["area"]
    )
    login(client, "cur@example.com")

    def found(**args) -> set[int]:
        page = client.get("/admin/conversations", query_string=args).get_data(as_text=True)
        return {c for c in (sleepy, walker) if f"Conversation {c}<" in page}

    assert found() == {sleepy, walker}
    assert found(q="sleep night") == {sleepy}
    assert found(q="walk") == {walker}
    assert found(channel="sms") == {walker}
    assert found(step="coach") == {sleepy}
    assert found(flow="goal_setting") == {sleepy, walker}
    assert found(published="yes") == set()
    assert found(since="2999-01-01") == set()
    post(client, f"/admin/conversations/{walker}/labels", {"tags": "walking, Keep", "rating": "4"})
    assert found(tag="keep") == {walker}
    assert found(rating="4") == {walker}
    assert found(rating="5") == set()
    assert client.get("/admin/conversations?since=yesterday").status_code == 400


def test_the_transcript_shows_author_step_status_and_llm_usage(app, client):
    add_user(app, "cur@example.com", "curator")
    usage = LLMUsage(model="gpt-4o-mini", prompt_tokens=120, completion_tokens=30, latency_ms=812)
    conversation = seed_conversation(
        app, PHONE, [("hello", ["Hi there"])], steps=["coach"], usage=usage
    )
    login(client, "cur@example.com")
    page = client.get(f"/admin/conversations/{conversation}").get_data(as_text=True)
    assert "goal_setting / coach" in page
    assert "gpt-4o-mini · 120+30 tokens · 812 ms" in page
    assert '<span class="badge pending status">queued</span>' in page
    assert '<span class="author">Contact</span>' in page
    assert '<span class="author">Bot</span>' in page


def test_curation_redacts_summarises_tags_publishes_and_records_who(app, client):
    add_user(app, "cur@example.com", "curator")
    conversation = seed_conversation(
        app,
        PHONE,
        [("I'm Ana, call me on +1 555 123 0001 or ana@example.com", ["Thanks Ana!"]), ("ok", [])],
        name="Ana",
    )
    login(client, "cur@example.com")
    page = client.get(f"/admin/conversations/{conversation}").get_data(as_text=True)
    assert '<mark data-kind="phone">+1 555 123 0001</mark>' in page
    assert '<mark data-kind="email">ana@example.com</mark>' in page
    assert '<mark data-kind="name">Ana</mark>' in page

    with app.app_context():
        first = db.session.scalar(sa.text("SELECT min(id) FROM message"))
    post(
        client,
        f"/admin/conversations/{conversation}/redactions",
        {"message_id": str(first), "action": "accept"},
    )
    refused = post(client, f"/admin/conversations/{conversation}/publish", {"action": "publish"})
    assert "write the summary question and answer" in client.get(
        refused.headers["Location"]
    ).get_data(as_text=True)
    post(
        client,
        f"/admin/conversations/{conversation}/summary",
        {"question": "How to sleep?", "answer": "Routine.", "teaser": "Sleep", "action": "save"},
    )
    post(client, f"/admin/conversations/{conversation}/labels", {"tags": "sleep", "rating": "5"})
    post(client, f"/admin/conversations/{conversation}/publish", {"action": "publish"})

    with app.app_context():
        redacted = dict(
            db.session.execute(sa.select(RedactedMessage.message_id, RedactedMessage.text)).all()
        )
        assert redacted[first] == "I'm [NAME], call me on [PHONE] or [EMAIL]"
        assert len(redacted) == 3  # the others filled in at publish time
        curation = db.session.get(Curation, conversation)
        assert (curation.published, curation.rating, curation.updated_by) == (
            True,
            5,
            "cur@example.com",
        )
        assert db.session.scalars(sa.select(ConversationTag.tag)).all() == ["sleep"]
        actions = db.session.scalars(sa.select(AuditEvent.action).order_by(AuditEvent.id)).all()
        assert actions == [
            "curation.redact",
            "curation.summary",
            "curation.tags",
            "curation.rating",
            "curation.publish",
        ]
        assert {e.actor for e in db.session.scalars(sa.select(AuditEvent))} == {"cur@example.com"}
        original = db.session.scalar(sa.text(f"SELECT body FROM message WHERE id = {first}"))
        assert "+1 555 123 0001" in original  # the original is kept apart

    post(client, f"/admin/conversations/{conversation}/publish", {"action": "unpublish"})
    with app.app_context():
        assert db.session.get(Curation, conversation).published is False


def test_an_edited_redaction_is_stored_as_typed(app, client):
    add_user(app, "cur@example.com", "curator")
    conversation = seed_conversation(app, PHONE, [("I live on Elm Street 4", [])])
    login(client, "cur@example.com")
    with app.app_context():
        message = db.session.scalar(sa.text("SELECT id FROM message"))
    post(
        client,
        f"/admin/conversations/{conversation}/redactions",
        {"message_id": str(message), "action": "save", "text": "I live on [ADDRESS]"},
    )
    with app.app_context():
        assert db.session.get(RedactedMessage, message).text == "I live on [ADDRESS]"


def test_the_llm_drafts_a_summary_that_a_person_then_saves(app, client, fake_openai):
    add_user(app, "cur@example.com", "curator")
    conversation = seed_conversation(app, PHONE, [("I sleep badly", ["Try a routine"])])
    login(client, "cur@example.com")
    fake_openai.script(
        {"question": "How can I sleep better?", "answer": "Keep a routine.", "teaser": "Sleep"}
    )
    response = post(client, f"/admin/conversations/{conversation}/summary", {"action": "draft"})
    page = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "How can I sleep better?" in page
    assert "Person: I sleep badly" in fake_openai.requests[0]["messages"][1]["content"]
    with app.app_context():
        assert db.session.get(Curation, conversation) is None  # nothing saved yet
