"""Headless Chromium (Debian's ``chromium``) driven by Playwright for Python.

Contract:
- ``browser_available()``: the ``playwright`` module imports and ``/usr/bin/chromium``
  exists. ``require_browser()`` skips a test without them, and FAILS it under
  ``CI=true`` (a missing tool must not pass silently).
- ``open_browser()`` (context manager) launches that binary headless with every
  background service off (no component updates, sync, QUIC or background
  networking: the browser only talks to the page's 127.0.0.1 server) and closes
  it by itself; Playwright's own browser downloads are never used.
- ``Console`` records console messages of type ``error`` and uncaught page errors
  of a ``Page`` (``watch(page)``); ``errors`` lists them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def browser_available() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return CHROMIUM.exists()


def require_browser() -> None:
    if browser_available():
        return
    message = "headless Chromium needs /usr/bin/chromium (apt-get install chromium) and playwright"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def open_browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Console:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def watch(self, page: Any) -> Any:
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        return page
