"""Shared by the browser tests: Debian's Chromium driven by Playwright, headless.

A test module does ``from tests.browser import sync_api`` (which skips the
module, saying why, where the ``playwright`` package or Chromium is missing)
and uses the `live_server`, `chromium` and `sqlite_only` fixtures of
tests/conftest.py.
"""

from __future__ import annotations

import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"
#: The flags this workplace's probe uses: without the background-networking
#: ones, Chromium's connections are refused by the closed network.
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
if shutil.which(CHROMIUM) is None:
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)


def wait_until(page, expression: str, timeout: float = 15.0) -> None:
    """Poll a JavaScript expression until it is truthy (or fail after `timeout` seconds).

    Playwright's ``page.wait_for_function`` polls with ``eval`` in the page, which
    the Content-Security-Policy (no ``'unsafe-eval'``) refuses; ``page.evaluate``
    runs through the DevTools protocol, which the policy does not govern.
    """
    import time

    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout} s: {expression}")
        page.wait_for_timeout(50)
