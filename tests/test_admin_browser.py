"""The console in a real browser: Playwright driving Debian's Chromium, headless.

The app is served by a werkzeug server on 127.0.0.1 in a thread, on a phone-sized
screen. These run on SQLite only: the same pages and queries run on PostgreSQL
in tests/test_admin_console.py and tests/test_api.py, and a second browser run
would double the slowest tests of the suite for no new coverage.

Skipped, saying why, where Chromium (``apt-get install chromium``, done by
``.ci/run``) or the ``playwright`` package is missing.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.admin_support import PASSWORD, add_user, seed_conversation
from tests.browser import sync_api, wait_until  # noqa: F401  (skips without Chromium)

PHONE_SCREEN = {"width": 390, "height": 844}
PHONE = "+15551230001"
TYPED_PHONE = "+1 555 123 0001"

pytestmark = pytest.mark.usefixtures("sqlite_only")


def new_page(chromium):
    context = chromium.new_context(viewport=PHONE_SCREEN)
    page = context.new_page()
    page.set_default_timeout(15_000)
    return page


def log_in(page, base: str, email: str) -> None:
    page.goto(f"{base}/admin/conversations")
    assert "/admin/login" in page.url
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(re.compile(r".*/admin/conversations$"))


def fits_the_screen(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_curate_a_conversation_and_see_it_on_the_public_api(app, live_server, chromium):
    seed_conversation(app, "+15551239999", [("unrelated chat", ["hello"])])
    conversation = seed_conversation(
        app,
        PHONE,
        [(f"I can't sleep, text me on {TYPED_PHONE}", ["Let's work on a bedtime routine."])],
        steps=["coach"],
    )
    add_user(app, "cur@example.com", "curator")
    page = new_page(chromium)

    log_in(page, live_server, "cur@example.com")
    page.fill("#q", "sleep")
    page.click("button:has-text('Search')")
    assert page.locator("table.table tbody tr").count() == 1
    assert fits_the_screen(page)
    page.click(f"text=Conversation {conversation}")

    message = page.locator(".message.inbound").first
    assert message.locator("mark[data-kind=phone]").inner_text() == TYPED_PHONE
    message.locator("button:has-text('Accept suggestion')").click()
    page.wait_for_selector(".redacted-text")
    assert page.locator(".message.inbound .redacted-text").inner_text() == (
        "I can't sleep, text me on [PHONE]"
    )

    page.fill("#question", "How can I fall asleep more easily?")
    page.fill("#answer", "A regular bedtime routine helps.")
    page.fill("#teaser", "Sleep better tonight")
    page.click("button:has-text('Save summary')")
    page.wait_for_selector("text=Summary saved.")
    page.click("button:has-text('Publish')")
    page.wait_for_selector("text=Published")
    assert fits_the_screen(page)

    page.goto(f"{live_server}/api/v1/conversations")
    listing = page.locator("body").inner_text()
    page.goto(f"{live_server}/api/v1/conversations/{conversation}")
    detail = page.locator("body").inner_text()
    for text in (listing, detail):
        digits = re.sub(r"\D", "", text)
        assert "5551230001" not in digits
    data = json.loads(detail)["data"]
    assert data["question"] == "How can I fall asleep more easily?"
    assert data["messages"][0]["text"] == "I can't sleep, text me on [PHONE]"
    assert [c["id"] for c in json.loads(listing)["data"]] == [conversation]


def test_a_curator_cannot_reach_admin_pages_and_logged_out_is_redirected(
    app, live_server, chromium
):
    add_user(app, "cur@example.com", "curator")
    anonymous = new_page(chromium)
    anonymous.goto(f"{live_server}/admin/metrics")
    assert re.search(r"/admin/login\?next=%2Fadmin%2Fmetrics$", anonymous.url)

    page = new_page(chromium)
    log_in(page, live_server, "cur@example.com")
    response = page.goto(f"{live_server}/admin/users")
    assert response is not None and response.status == 403
    assert page.locator("header a:has-text('Users')").count() == 0


def test_the_dashboard_draws_its_charts(app, live_server, chromium):
    seed_conversation(app, PHONE, [("hello", ["hi"]), ("sleep", ["ok"])], steps=["a", "b"])
    add_user(app, "admin@example.com", "admin")
    page = new_page(chromium)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    log_in(page, live_server, "admin@example.com")
    page.goto(f"{live_server}/admin/metrics")
    # Messages and active contacts; no LLM reply nor failure yet: those say so instead.
    wait_until(page, "window.parleyCharts && window.parleyCharts.length >= 2")
    assert page.locator("text=No LLM replies yet.").count() == 1
    assert page.locator("text=No failed deliveries.").count() == 1
    assert errors == []
    assert page.evaluate("typeof Chart") == "function"
    assert fits_the_screen(page)


def test_no_page_breaks_the_content_security_policy(app, live_server, chromium):
    conversation_id = seed_conversation(app, PHONE, [("hello", ["hi"])], steps=["a"])
    add_user(app, "admin@example.com", "admin")
    page = new_page(chromium)
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    log_in(page, live_server, "admin@example.com")
    for path in (
        "/",
        "/admin/conversations",
        f"/admin/conversations/{conversation_id}",
        "/admin/inbox",
        "/admin/exports",
        "/admin/users",
        "/simulator",
    ):
        response = page.goto(live_server + path)
        assert response is not None and response.status == 200, path
        assert "default-src 'self'" in response.headers["content-security-policy"]
        assert response.headers["x-frame-options"] == "DENY"
    page.goto(f"{live_server}/admin/metrics")
    wait_until(page, "window.parleyCharts && window.parleyCharts.length >= 2")
    page.click("a:has-text('7 days')")
    page.wait_for_url(re.compile(r".*/admin/metrics\?days=7$"))
    page.select_option("#flow", "menu")  # submits itself (admin.js, no inline handler)
    page.wait_for_url(re.compile(r".*/admin/metrics\?.*flow=menu.*"))
    assert violations == []
