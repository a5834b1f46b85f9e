"""The agents' inbox in a real browser (Playwright driving Debian's Chromium, headless).

A contact asks for a human through the webhook; an agent sees the conversation
in the inbox, accepts it, sees the contact's next message appear without a
reload, replies (sent through the fake Twilio REST API) and hands it back; the
contact's next message is answered by the bot at the step where it left off.
SQLite only, like tests/test_admin_browser.py (same reasons).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from werkzeug.serving import make_server

from models import Conversation, db
from services.handover import events
from tests.admin_support import PASSWORD, add_user
from tests.test_handover import FLOW, HANDOVER_MESSAGE, QUESTION
from tests.twiml import messages_of

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
SENDER = "whatsapp:+15551230001"

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
if shutil.which(CHROMIUM) is None:
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


@pytest.fixture
def database_url(database_url: str) -> str:
    if not database_url.startswith("sqlite"):
        pytest.skip("browser tests run on SQLite only (see tests/test_admin_browser.py)")
    return database_url


@pytest.fixture
def app_config(app_config: dict, tmp_path: Path) -> dict:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "helpdesk.yaml").write_text(FLOW, encoding="utf-8")
    return {**app_config, "FLOWS_DIR": str(folder)}


@pytest.fixture
def server(app) -> Iterator[str]:
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
def page() -> Iterator:
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = browser.new_context(viewport={"width": 390, "height": 844})
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def test_an_agent_takes_a_conversation_replies_and_hands_it_back(
    app, server, page, twilio, fake_twilio
):
    add_user(app, "sam@example.org", "agent")
    assert messages_of(twilio.say("hi", sender=SENDER).data) == [QUESTION]
    assert messages_of(twilio.say("human", sender=SENDER).data) == [HANDOVER_MESSAGE]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(f"{server}/admin/inbox")
    page.fill("#email", "sam@example.org")
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.goto(f"{server}/admin/inbox")
    page.click("text=Conversation 1")
    assert page.locator("#pending").count() == 1
    page.click("button:has-text('Accept')")
    page.wait_for_selector("text=Handover accepted")

    # The contact writes while the agent has the page open: it appears, no reload.
    assert messages_of(twilio.say("are you there?", sender=SENDER).data) == []
    page.wait_for_selector("#transcript .text:has-text('are you there?')")

    page.fill("#body", "Hi, I'm Sam. Sleep or movement, which one worries you?")
    page.click("button:has-text('Send')")
    page.wait_for_selector("text=Sent.")
    assert fake_twilio.bodies == ["Hi, I'm Sam. Sleep or movement, which one worries you?"]

    page.click("button:has-text('Hand back')")
    page.wait_for_selector("text=Handed back to the bot.")
    assert page.locator("#controlled-by").inner_text() == "bot"
    assert errors == []

    assert messages_of(twilio.say("movement", sender=SENDER).data) == ["Noted: movement."]
    with app.app_context():
        cid = db.session.scalars(sa.select(Conversation.id)).one()
        assert [event.kind for event in events(db.session, cid)] == [
            "handover",
            "handover_confirmed",
            "handback",
        ]
