"""Save as test, in a real browser (Playwright driving Debian's Chromium, headless).

A conversation run through the signed webhook is saved as a conversation test
from its transcript; the flow-tests page shows it passing, and `flask flows
test` passes on the file at once. SQLite only, as the other browser tests.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.admin_support import PASSWORD, add_user
from tests.browser import sync_api  # noqa: F401  (skips without Chromium)
from tests.designer_support import (
    assert_private_details_absent,
    conversation_id,
    copy_flows,
    run_a_conversation,
)

pytestmark = pytest.mark.usefixtures("sqlite_only")


@pytest.fixture
def own_flows(app_config, tmp_path) -> Path:
    """A copy of the shipped flows for `app`: the saved test goes there."""
    return copy_flows(app_config, tmp_path)


def test_a_curator_saves_a_conversation_as_a_test(
    own_flows,
    app,
    live_server,
    chromium,
    twilio,
    fake_openai,
):
    run_a_conversation(twilio, fake_openai)
    conversation = conversation_id(app)
    add_user(app, "cur@example.com", "curator")
    page = chromium.new_context(viewport={"width": 390, "height": 844}).new_page()
    page.set_default_timeout(15_000)

    page.goto(f"{live_server}/admin/conversations")
    page.fill("#email", "cur@example.com")
    page.fill("#password", PASSWORD)
    page.click("button:has-text('Log in')")
    page.wait_for_url(re.compile(r".*/admin/conversations$"))
    page.goto(f"{live_server}/admin/conversations/{conversation}")
    page.click("summary:has-text('Save as test')")
    page.click("button:has-text('Save as test')")

    page.wait_for_url(re.compile(r".*/admin/flow-tests#test-goal-setting-conversation-.*"))
    assert "it passes" in page.locator(".flash").inner_text()
    row = page.locator("tr.flow-test", has_text=f"conversation {conversation}")
    assert row.locator("td.result").first.inner_text().startswith("passed")
    saved = own_flows / "tests" / f"goal_setting_conversation_{conversation}.yaml"
    assert_private_details_absent(saved.read_text())
    result = app.test_cli_runner().invoke(args=["flows", "test", str(saved)])
    assert result.exit_code == 0, result.output

    row.locator(f"a:has-text('conversation {conversation}')").click()
    page.wait_for_url(re.compile(rf".*/admin/conversations/{conversation}$"))
    assert "This conversation is a test" in page.locator(".saved-test").inner_text()
