"""Every page of the console in a real browser, on a desktop and a phone screen.

Playwright drives Chromium (headless) against the app served on 127.0.0.1. Each
page must load without a script error or a Content-Security-Policy violation and
fit the screen; the metrics page must draw its funnel's bars (read back from
Chart.js), the inbox must show a failed send as failed, and the simulator with
the built-in scripted model must hold the goal-setting conversation to its end.
Set ``PARLEY_SCREENSHOTS`` to a folder to keep a screenshot of each page.
SQLite only, like tests/test_admin_browser.py (same reasons).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from curation.users import create_user
from engine.ports import LLMUsage
from models import Conversation, Execution, Message, db
from tests.admin_support import PASSWORD, seed_conversation
from tests.browser import sync_api, wait_until  # noqa: F401  (skips without Chromium)

SCREENS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 390, "height": 844}}
ADMIN = "ada@example.org"

pytestmark = pytest.mark.usefixtures("sqlite_only")


def seed(app) -> dict[str, int]:
    """An admin with a name, two goal-setting executions on two versions, a failed send."""
    usage = LLMUsage(model="gpt-4o-mini", prompt_tokens=900, completion_tokens=120, latency_ms=640)
    first = seed_conversation(
        app,
        "+15551230001",
        [("hello", ["Hi Ana!", "Which matters most?"]), ("movement", ["What do you enjoy?"])],
        name="Ana",
        steps=["welcome", "area", "coach"],
        usage=usage,
    )
    second = seed_conversation(
        app, "+15551230002", [("start", ["Hi there!", "Which matters most?"])], steps=["welcome"]
    )
    with app.app_context():
        create_user(db.session, ADMIN, PASSWORD, "admin", name="Ada Admin")
        versions = ((1, "a1b2c3d4e5f6", "coach"), (2, "0f9e8d7c6b5a", "area"))
        for contact_id, version, step in versions:
            execution = Execution(
                contact_id=contact_id,
                flow_id="goal_setting",
                flow_version=version,
                current_step=step,
                status="waiting",
            )
            db.session.add(execution)
            db.session.flush()
            db.session.execute(
                sa.update(Message)
                .where(Message.contact_id == contact_id, Message.step_id.is_not(None))
                .values(execution_id=execution.id)
            )
        db.session.execute(
            sa.update(Message)
            .where(Message.conversation_id == second, Message.direction == "outbound")
            .values(status="failed", error_code=30007)
        )
        db.session.commit()
    return {"first": first, "second": second}


def open_page(chromium, screen: str):
    context = chromium.new_context(viewport=SCREENS[screen])
    page = context.new_page()
    page.set_default_timeout(15_000)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return page, problems


def log_in(page, base: str) -> None:
    page.goto(f"{base}/admin/login")
    page.fill("#email", ADMIN)
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(re.compile(r".*/admin/conversations$"))


def fits(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def shoot(page, name: str) -> None:
    folder = os.environ.get("PARLEY_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("screen", list(SCREENS))
def test_every_page_loads_fits_and_speaks_one_language(app, live_server, chromium, screen):
    ids = seed(app)
    page, problems = open_page(chromium, screen)
    page.goto(live_server + "/")
    assert page.locator(".topbar .brand").inner_text() == "Parley"
    assert page.locator("h1").inner_text().startswith("Conversations on WhatsApp and SMS")
    assert fits(page), "/"
    shoot(page, f"{screen}-home")
    log_in(page, live_server)
    pages = {
        "conversations": "/admin/conversations",
        "transcript": f"/admin/conversations/{ids['first']}",
        "inbox": "/admin/inbox?view=all",
        "inbox-chat": f"/admin/inbox/{ids['second']}",
        "metrics": "/admin/metrics",
        "exports": "/admin/exports",
        "users": "/admin/users",
        "user": "/admin/users/1",
        "guide": "/admin/docs/flow-language",
        "simulator": "/simulator",
    }
    for name, path in pages.items():
        response = page.goto(live_server + path)
        assert response is not None and response.status == 200, path
        # One visual language: the same style sheet, top bar and page heading everywhere.
        assert page.locator("link[href$='/admin/static/admin.css']").count() == 1, path
        assert page.locator(".topbar .nav a").count() >= 7, path
        assert page.locator("h1").count() >= 1, path
        if name == "metrics":
            wait_until(page, "window.parleyCharts && window.parleyCharts.length >= 2")
        assert fits(page), f"{path} is wider than the {screen} screen"
        shoot(page, f"{screen}-{name}")
    assert problems == []


def test_the_funnel_draws_bars_and_axes_count_in_whole_numbers(app, live_server, chromium):
    seed(app)
    page, problems = open_page(chromium, "desktop")
    log_in(page, live_server)
    page.goto(f"{live_server}/admin/metrics?days=7")
    wait_until(page, "window.parleyChartsById && window.parleyChartsById['funnel:goal_setting']")
    funnel = "window.parleyChartsById['funnel:goal_setting']"
    labels = page.evaluate(f"{funnel}.data.labels")
    assert labels[:2] == ["welcome", "area"]
    # Each bar as drawn: its length along the value axis and its thickness, in pixels.
    bars = page.evaluate(
        f"""{funnel}.data.datasets.map((dataset, i) => {funnel}.getDatasetMeta(i).data.map(
            (bar) => [Math.abs(bar.x - bar.base), bar.height]))"""
    )
    versions = page.evaluate(f"{funnel}.data.datasets.map((d) => d.label)")
    assert versions == ["version a1b2c3d", "version 0f9e8d7"]
    welcome_lengths = [bars[0][0][0], bars[1][0][0]]
    assert all(length > 20 for length in welcome_lengths), bars
    assert all(height > 5 for dataset in bars for _, height in dataset), bars
    assert bars[1][2][0] == 0  # the second execution never reached coach
    ticks = page.evaluate(f"{funnel}.scales.x.ticks.map((t) => t.value)")
    assert ticks and all(float(value).is_integer() for value in ticks), ticks
    failure_ticks = page.evaluate(
        "window.parleyChartsById['failures'].scales.y.ticks.map((t) => t.value)"
    )
    assert all(float(value).is_integer() for value in failure_ticks), failure_ticks
    assert page.locator("#failure-codes td:has-text('30007')").count() == 1
    page.select_option("#flow", "menu")  # submits itself (admin.js: no inline handler)
    page.wait_for_url(re.compile(r".*flow=menu.*"))
    assert page.locator("text=No executions in this range.").count() == 1
    assert problems == []


def test_the_inbox_shows_a_failed_send_as_failed(app, live_server, chromium, twilio, fake_twilio):
    with app.app_context():
        create_user(db.session, ADMIN, PASSWORD, "admin", name="Ada Admin")
        db.session.commit()
    twilio.say("hi", sender="whatsapp:+15551230009")
    twilio.say("human", sender="whatsapp:+15551230009")
    with app.app_context():
        cid = db.session.scalars(sa.select(Conversation.id)).one()
    page, problems = open_page(chromium, "phone")
    log_in(page, live_server)
    page.goto(f"{live_server}/admin/inbox/{cid}")
    page.click("button:has-text('Take over')")
    page.wait_for_selector("text=You have the conversation")
    assert page.locator("#controlled-by").inner_text() == "Ada Admin"

    page.fill("#body", "x" * 1700)  # over Twilio's 1,600 characters: refused with 21617
    page.click("button:has-text('Send')")
    page.wait_for_selector(".flash.error")
    assert page.locator(".flash.error").inner_text().startswith("Not sent: Twilio error 21617")
    assert page.locator(".flash.ok").count() == 0
    bubble = page.locator("#transcript .bubble.us").last
    assert "failed" in (bubble.get_attribute("class") or "")
    assert bubble.locator(".author").inner_text() == "Ada Admin"
    assert bubble.locator(".status").inner_text() == "failed"
    assert bubble.locator(".error").inner_text().startswith("Twilio error 21617")
    shoot(page, "phone-inbox-failed")

    page.fill("#body", "Hi, this is Ada.")
    page.click("button:has-text('Send')")
    page.wait_for_selector(".flash.ok:has-text('Sent.')")
    page.evaluate("window.parleyInboxPoll()")  # the poll redraws the same lines
    wait_until(page, "document.querySelectorAll('#transcript .bubble.failed').length === 1")
    assert problems == []


@pytest.fixture
def app_config(app_config: dict, request: pytest.FixtureRequest) -> dict:
    """The simulator test runs on the built-in scripted model (no fake OpenAI server)."""
    if request.node.get_closest_marker("scripted"):
        return {**app_config, "OPENAI_API_KEY": None, "OPENAI_BASE_URL": "scripted"}
    return app_config


@pytest.fixture
def admin_page(app, live_server, chromium) -> Iterator:
    with app.app_context():
        create_user(db.session, ADMIN, PASSWORD, "admin")
        db.session.commit()
    page, problems = open_page(chromium, "desktop")
    log_in(page, live_server)
    yield page
    assert problems == []


@pytest.mark.scripted
def test_the_scripted_model_holds_the_demo_to_its_end_as_simulated(app, live_server, admin_page):
    page = admin_page
    page.goto(f"{live_server}/simulator")
    assert "Scripted demo model" in page.locator("#scripted-model").inner_text()

    def say(text: str, replies: int) -> list[str]:
        page.fill("#text", text)
        page.click("#send")
        wait_until(page, f"document.querySelectorAll('#chat li.bot').length >= {replies}")
        wait_until(page, "!document.getElementById('send').disabled")
        return [
            item.evaluate("node => node.firstChild.textContent")
            for item in page.locator("#chat li.bot").all()
        ]

    say("hello", 2)
    assert say("2", 3)[-1].startswith("Let's work on movement.")
    assert "How about a 10-minute walk after lunch on weekdays?" in say("I like walking", 4)[-1]
    replies = say("yes", 6)
    assert replies[-1].startswith("Great, your goal for this week: a 10-minute walk")
    assert page.locator("#state-status").inner_text() == "ended"
    shoot(page, "desktop-simulator-scripted")
    with app.app_context():
        statuses = db.session.scalars(
            sa.select(Message.status).where(Message.direction == "outbound")
        ).all()
        models = set(db.session.scalars(sa.select(Message.model).where(Message.model.is_not(None))))
    assert set(statuses) == {"simulated"}
    assert models == {"scripted-demo"}
    page.goto(f"{live_server}/admin/conversations/1")
    assert page.locator(".bubble .status").first.inner_text() == "simulated"
    assert page.locator("text=queued").count() == 0
