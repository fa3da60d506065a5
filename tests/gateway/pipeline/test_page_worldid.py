"""The real IDKit 2 widget (vendored, served by popgate) in headless Chromium:
its bridge calls are answered by the test (``page.route``) with real fixture
proofs, the page posts the result to the exchange endpoint, gets the human
session cookie and goes back; the origin sees ``PoP-Class: human``. Refused
proofs (reused nullifier, wrong action) are readable messages, not JSON.
"""

from __future__ import annotations

import json

from tests.conftest import url_of
from tests.gateway.pipeline.page_support import Bridge, page_extra, screenshot
from tests.support.browser import ARGS, CHROMIUM, playwright


async def prove(browser, url: str, case: int, shot: str = ""):
    context = await browser.new_context(viewport={"width": 1000, "height": 800})
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    bridge = Bridge(page, case)
    await bridge.install()
    first = await page.goto(url)
    assert first is not None and first.status == 402
    await page.click("#popgate-worldid")
    await page.wait_for_selector('a[href^="https://world.org/verify"]', state="attached", timeout=20_000)
    if shot:
        await screenshot(page, shot, full_page=False)
    return context, page, bridge, errors


async def test_worldid_widget_end_to_end(upstream, gateway_factory, tmp_path):
    """Widget → bridge (intercepted, real proof) → exchange → cookie → origin sees a human;
    the same person again, and a proof for another action, get readable refusals."""
    async_playwright = playwright()
    gw = await gateway_factory(upstream, extra=page_extra(tmp_path))
    target = url_of(gw, "/human/report?x=1")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context, page, bridge, csp_errors = await prove(browser, target, 0, "challenge-worldid.png")
            await page.get_by_text("PoP-Class").wait_for(timeout=20_000)  # the origin's page
            info = json.loads(await page.inner_text("body"))
            assert info["pop"]["PoP-Class"] == "human" and info["pop"]["PoP-Evidence"] == "worldid"
            assert info["path"] == "/human/report?x=1"
            cookies = {c["name"]: c for c in await context.cookies()}
            assert cookies["popgate_session"]["httpOnly"]
            sent = bridge.requests[0]
            assert set(sent) == {"iv", "payload"}, "the widget encrypts its request to the bridge"
            assert not [e for e in csp_errors if "script" in e], csp_errors
            await context.close()

            # the same nullifier again: a sentence, not JSON
            context, page, _, _ = await prove(browser, target, 0)
            status = page.locator("#popgate-prove-status")
            await status.filter(has_text="already used").wait_for(timeout=20_000)
            # the widget closes itself so that the page's sentence is what the person reads
            await page.locator('[role="dialog"]').wait_for(state="detached", timeout=10_000)
            await screenshot(page, "challenge-worldid-refused.png", full_page=False)
            assert "{" not in await status.inner_text()
            assert "/human/report" not in page.url or (await page.title()) != ""
            await context.close()

            # a proof made for another action ("vote")
            context, page, _, _ = await prove(browser, target, 2)
            await (
                page.locator("#popgate-prove-status").filter(has_text="not accepted").wait_for(timeout=20_000)
            )
            await context.close()
        finally:
            await browser.close()
