"""The challenge page in real headless Chromium: it solves the puzzle in a Web Worker,
gets the session cookie and reaches the upstream. Saves deploy/docs/challenge-page.png
(with POPGATE_SCREENSHOTS=1: deploy/docs/screenshots.sh).

Needs Debian ``chromium`` (/usr/bin/chromium) and the ``playwright`` Python package;
without them this test FAILS with instructions (it never skips silently).
"""

from __future__ import annotations

import json

from tests.conftest import url_of
from tests.gateway.pipeline.page_support import screenshot
from tests.gateway.schemes.puzzle_support import POLICY, puzzle_extra
from tests.support.browser import ARGS, CHROMIUM, playwright

SLOW = (
    POLICY
    + """
[[rules]]
name = "slow"
path = "/slow/**"
action = { kind = "challenge", ways = ["puzzle"], min_bits = 26 }
"""
)


async def test_browser_solves_challenge_and_reaches_upstream(upstream, gateway_factory, tmp_path):
    """402 page → worker solves → POST → cookie (HttpOnly, SameSite=Lax, Path=/) → the upstream page."""
    async_playwright = playwright()
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path, floor=12, policy=SLOW))
    target = url_of(gw, "/api/page?from=browser")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            first = await page.goto(target)
            assert first is not None and first.status == 402
            assert "text/html" in (first.headers.get("content-type") or "")
            # the origin's JSON (locators: the page's CSP forbids eval, so no wait_for_function)
            await page.get_by_text("PoP-Class").wait_for(timeout=60_000)
            info = json.loads(await page.inner_text("body"))
            assert info["pop"]["PoP-Class"] == "unknown" and info["pop"]["PoP-Evidence"] == "puzzle"
            assert info["path"] == "/api/page?from=browser"
            cookies = {c["name"]: c for c in await context.cookies()}
            c = cookies["popgate_session"]
            assert c["httpOnly"] and c["sameSite"] == "Lax" and c["path"] == "/" and not c["secure"]
            # a reload reaches the upstream directly: no challenge loop
            again = await page.reload()
            assert again is not None and again.status == 200

            # screenshot of the page at work (26 bits keeps it busy far longer than the wait below)
            shot = await (await browser.new_context()).new_page()  # no cookie yet
            await shot.set_viewport_size({"width": 900, "height": 760})
            slow = await shot.goto(url_of(gw, "/slow/report"))
            assert slow is not None and slow.status == 402
            # (the page's CSP forbids eval: wait with locators, not wait_for_function)
            await shot.locator("#popgate-status").filter(has_text="Working").wait_for(timeout=60_000)
            await screenshot(shot, "challenge-page.png")  # with POPGATE_SCREENSHOTS=1
        finally:
            await browser.close()
