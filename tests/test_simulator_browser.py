"""The simulator in a real browser: the demo flow held to its end, as an admin sees it.

Playwright drives Debian's Chromium (headless) against the app served by a
werkzeug server on 127.0.0.1 in a thread; the coach's structured outputs come
from the fake OpenAI server through the real ``openai`` client. SQLite only:
the turn path itself runs on both databases in the webhook and flow tests.

Skipped, saying why, where Chromium (``apt-get install chromium``, done by
``.ci/run``) or the ``playwright`` package is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from models import Execution, Message, db
from tests.admin_support import PASSWORD, add_user
from tests.browser import sync_api, wait_until  # noqa: F401  (skips without Chromium)

GREETING = "Hi Ana! I'm Parley, your well-being companion. Let's pick one small goal for this week."
QUESTION = "Which matters most to you right now: 1. sleep, 2. movement or 3. connection?"
GOAL = "a 10-minute walk after lunch on weekdays"
CONFIRM = (
    f"Great, your goal for this week: {GOAL}. "
    "I'll be cheering you on. Message me any time to set a new one."
)

pytestmark = pytest.mark.usefixtures("sqlite_only")


@pytest.fixture
def page(app, live_server, chromium) -> Iterator:
    """A browser page logged in as an admin, on the simulator."""
    add_user(app, "admin@example.com", "admin")
    page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(15_000)
    page.goto(f"{live_server}/simulator")
    assert "/admin/login" in page.url  # admins only
    page.fill("#email", "admin@example.com")
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(re.compile(r".*/simulator$"))
    return page


def coach(reply: str, goal: str = "", agreed: bool = False) -> dict:
    return {"reply": reply, "goal": goal, "agreed": agreed}


def say(page, text: str, replies_after: int) -> list[str]:
    """Type a message; wait until the chat holds `replies_after` bot bubbles; return them."""
    page.fill("#text", text)
    page.click("#send")
    wait_until(page, f"document.querySelectorAll('#chat li.bot').length >= {replies_after}")
    wait_until(page, "!document.getElementById('send').disabled")
    return [
        item.evaluate("node => node.firstChild.textContent")
        for item in page.locator("#chat li.bot").all()
    ]


def side(page, name: str) -> str:
    return page.locator(f"#{name}").inner_text()


def test_the_demo_flow_is_held_to_its_end_in_the_simulator(app, page, fake_openai):
    fake_openai.script(
        coach("Movement it is! What kind of moving do you enjoy?"),
        coach(f"How about {GOAL}?", GOAL),
        coach("Wonderful, it's a deal!", GOAL, agreed=True),
    )
    page.fill("#phone", "+1 555 123 0001")
    page.fill("#name", "Ana")
    assert page.locator("#flow").input_value() == "goal_setting"  # the default flow

    assert say(page, "hello", 2) == [GREETING, QUESTION]
    assert (side(page, "state-step"), side(page, "state-status")) == ("area", "waiting")
    assert side(page, "steps-run") == "welcome → area"
    assert side(page, "llm-calls") == "none"

    assert say(page, "2", 3)[-1] == "Movement it is! What kind of moving do you enjoy?"
    assert (side(page, "state-step"), side(page, "state-status")) == ("coach", "waiting")
    assert '"area": "movement"' in side(page, "variables")
    call = page.locator("#llm-calls li.llm-call")
    assert call.count() == 1
    assert re.match(r"gpt-4o-mini · coach_output · \d+\+\d+ tokens", call.inner_text())
    call.locator("summary").click()
    assert "[system]" in call.inner_text() and "They chose to work on: movement." in (
        call.inner_text()
    )

    say(page, "I like walking", 4)
    replies = say(page, "Yes, let's do it!", 6)

    assert replies[-2:] == ["Wonderful, it's a deal!", CONFIRM]
    assert (side(page, "state-step"), side(page, "state-status")) == ("done", "ended")
    assert f'"goal": "{GOAL}"' in side(page, "variables")
    assert page.locator("#error").is_hidden()
    with app.app_context():  # the same turn path as the webhook: stored like any turn
        execution = db.session.scalars(sa.select(Execution)).one()
        assert (execution.flow_id, execution.status) == ("goal_setting", "ended")
        outbound = db.session.scalars(
            sa.select(Message.body).where(Message.direction == "outbound").order_by(Message.id)
        ).all()
        assert outbound == [GREETING, QUESTION, *replies[2:]]


def test_reset_starts_the_flow_afresh_and_sms_shows_segments(app, page, fake_openai):
    page.fill("#phone", "+15551230002")
    page.select_option("#channel", "sms")
    assert page.locator("#chat-pane").get_attribute("class") == "chat sms"

    say(page, "hello", 2)
    assert side(page, "state-step") == "area"
    assert page.locator("#chat li.bot .meta").first.inner_text() == "1 segment (GSM-7)"

    page.click("#reset")
    page.wait_for_selector("text=Reset: the next message starts the flow afresh.")
    assert side(page, "state-step") == "–"
    with app.app_context():
        assert db.session.scalars(sa.select(Execution.status)).all() == ["ended"]

    assert say(page, "sleep", 2)[0].startswith("Hi there! I'm Parley")  # welcome again
    with app.app_context():
        statuses = db.session.scalars(sa.select(Execution.status).order_by(Execution.id)).all()
        assert statuses == ["ended", "waiting"]
    assert fake_openai.requests == []


def test_the_simulator_needs_an_admin(app, client):
    assert client.get("/simulator").status_code == 302
    assert client.post("/simulator/send", json={}).status_code in (302, 401)
