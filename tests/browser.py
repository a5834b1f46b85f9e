"""Shared by the browser tests: a system Chromium driven by Playwright, headless.

A test module does ``from tests.browser import sync_api`` (which skips the
module, saying why, where the ``playwright`` package or Chromium is missing)
and uses the `live_server`, `chromium` and `sqlite_only` fixtures of
tests/conftest.py.

Chromium is the program named by ``CHROMIUM_PATH``, else the first of
`CHROMIUM_NAMES` on the ``PATH`` (Debian's ``chromium``, Ubuntu's
``chromium-browser``, Google Chrome...).
"""

from __future__ import annotations

import os
import shutil

import pytest

#: Names Chromium goes by on the PATH, in the order they are tried.
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    """The Chromium to drive: ``CHROMIUM_PATH``, else the first of `CHROMIUM_NAMES` on PATH."""
    configured = os.environ.get("CHROMIUM_PATH")
    if configured:
        return shutil.which(configured)
    return next((found for name in CHROMIUM_NAMES if (found := shutil.which(name))), None)


CHROMIUM = find_chromium()
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
if CHROMIUM is None:
    pytest.skip(
        f"no Chromium: CHROMIUM_PATH={os.environ['CHROMIUM_PATH']!r} is not a program"
        if os.environ.get("CHROMIUM_PATH")
        else f"no Chromium on the PATH (tried {', '.join(CHROMIUM_NAMES)}; apt-get install "
        "chromium, or set CHROMIUM_PATH)",
        allow_module_level=True,
    )


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
