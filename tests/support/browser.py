"""Debian's chromium driven by Playwright (no browser download): the path, the
flags this closed network needs, and a clear failure when either is missing."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

CHROMIUM = os.environ.get("POPGATE_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def playwright() -> Any:
    """``async_playwright``; fails the test (never skips) when chromium or playwright is absent."""
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        pytest.fail(
            "chromium not found at /usr/bin/chromium: `apt-get install -y chromium` (make test installs it)",
            pytrace=False,
        )
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail(
            "playwright not installed: `pip install playwright` (the browser is Debian's "
            "chromium, no `playwright install` needed)",
            pytrace=False,
        )
    return async_playwright
