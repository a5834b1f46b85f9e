"""The agents' inbox in a real browser (Playwright driving Debian's Chromium, headless).

A contact asks for a human through the webhook; an agent sees the conversation
in the inbox, accepts it, sees the contact's next message appear without a
reload, replies (sent through the fake Twilio REST API) and hands it back; the
contact's next message is answered by the bot at the step where it left off.
SQLite only, like tests/test_admin_browser.py (same reasons).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from handover.control import events
from models import Conversation, db
from tests.admin_support import PASSWORD, add_user
from tests.browser import sync_api  # noqa: F401  (skips without Playwright or Chromium)
from tests.test_handover import FLOW, HANDOVER_MESSAGE, QUESTION
from tests.twiml import messages_of

SENDER = "whatsapp:+15551230001"

pytestmark = pytest.mark.usefixtures("sqlite_only")


@pytest.fixture
def app_config(app_config: dict, tmp_path: Path) -> dict:
    folder = tmp_path / "flows"
    folder.mkdir()
    (folder / "helpdesk.yaml").write_text(FLOW, encoding="utf-8")
    return {**app_config, "FLOWS_DIR": str(folder)}


@pytest.fixture
def page(chromium) -> Iterator:
    context = chromium.new_context(viewport={"width": 390, "height": 844})
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


def test_an_agent_takes_a_conversation_replies_and_hands_it_back(
    app, live_server, page, twilio, fake_twilio
):
    add_user(app, "sam@example.org", "agent")
    assert messages_of(twilio.say("hi", sender=SENDER).data) == [QUESTION]
    assert messages_of(twilio.say("human", sender=SENDER).data) == [HANDOVER_MESSAGE]
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))

    page.goto(f"{live_server}/admin/inbox")
    page.fill("#email", "sam@example.org")
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.goto(f"{live_server}/admin/inbox")
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
    assert page.locator("#controlled-by").inner_text() == "Bot"
    assert errors == []

    assert messages_of(twilio.say("movement", sender=SENDER).data) == ["Noted: movement."]
    with app.app_context():
        cid = db.session.scalars(sa.select(Conversation.id)).one()
        assert [event.kind for event in events(db.session, cid)] == [
            "handover",
            "handover_confirmed",
            "handback",
        ]
