"""The challenge page in headless Chromium, one browser for: no-JS puzzle fallback
(form + solver), language from Accept-Language and the switcher, axe-core (no
serious/critical violations, light and dark), keyboard-only completion of the
puzzle with the sign-in and World ID buttons reachable by Tab. Screenshots go to
deploy/docs/ (``deploy/docs/screenshots.sh`` re-runs these tests to refresh them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from popgate.gateway.pipeline import challenge_page as cp
from popgate.gateway.pipeline.challenge_page import STATIC
from popgate.gateway.pipeline.decisions import WayOut
from tests.conftest import url_of
from tests.gateway.pipeline.page_support import page_extra, screenshot
from tests.support.browser import ARGS, CHROMIUM, playwright

ROOT = Path(__file__).resolve().parents[3]
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
PAID_WAYS = [
    (
        "pay",
        {
            "accepts": [
                {"network": "eip155:8453", "amount": "1000", "payTo": PAY_TO, "extra": {"name": "USDC"}}
            ]
        },
    ),
    ("credits", {"price": 1000, "topup": "/.well-known/popgate/credits/topup"}),
]
FOCUSED = "(e => e.id || (e.lang ? 'lang:' + e.lang : e.getAttribute('href')))(document.activeElement)"
AXE = ROOT / "tests" / "node" / "node_modules" / "axe-core" / "axe.min.js"


async def axe_violations(page) -> list[dict]:
    """axe-core's serious and critical violations (axe injected as a page script by Playwright)."""
    assert AXE.exists(), "axe-core missing: run `make node-deps`"
    await page.add_script_tag(path=str(AXE))
    found = await page.evaluate("axe.run(document).then(r => r.violations)")
    return [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["html"] for n in v["nodes"]][:3]}
        for v in found
        if v["impact"] in ("serious", "critical")
    ]


async def test_without_javascript_the_form_and_solver_get_in(upstream, gateway_factory, tmp_path):
    """JS off: no 'Starting…' left on screen; keyboard only, the form takes solve.py's
    answer → 303 → origin."""
    async_playwright = playwright()
    gw = await gateway_factory(upstream, extra=page_extra(tmp_path, floor=8))
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            ctx = await browser.new_context(java_script_enabled=False, viewport={"width": 900, "height": 900})
            page = await ctx.new_page()
            first = await page.goto(url_of(gw, "/docs/a?b=1"))
            assert first is not None and first.status == 402
            body = await page.inner_text("body")
            assert "JavaScript is turned off" in body and "Starting" not in body
            assert not await page.locator("#popgate-progress").is_visible()
            await screenshot(page, "challenge-nojs.png")
            data = json.loads(await page.locator("#popgate-data").text_content() or "{}")
            pz = data["puzzle"]
            solver = await page.request.get(url_of(gw, "/.well-known/popgate/static/solve.py"))
            assert solver.status == 200 and solver.headers["x-content-type-options"] == "nosniff"
            script = tmp_path / "solve.py"
            script.write_bytes(await solver.body())
            answer = subprocess.run(
                [sys.executable, str(script), pz["challenge"], str(pz["bits"]), str(pz["subs"])],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout.strip()
            # keyboard only: Tab to the answer field, type, Enter
            for _ in range(30):
                await page.keyboard.press("Tab")
                if await page.evaluate("document.activeElement.id") == "popgate-solution":
                    break
            await page.keyboard.type(answer)
            await page.keyboard.press("Enter")
            await page.get_by_text("PoP-Class").wait_for(timeout=20_000)
            assert json.loads(await page.inner_text("body"))["path"] == "/docs/a?b=1"
        finally:
            await browser.close()


async def test_languages_axe_and_keyboard(upstream, gateway_factory, tmp_path):
    """Accept-Language picks German; the switcher sets French; axe is clean in light and
    dark mode; Tab reaches the World ID button; an easy puzzle completes untouched."""
    async_playwright = playwright()
    gw = await gateway_factory(upstream, extra=page_extra(tmp_path, floor=10))
    # a sign-in way out as the OIDC extension offers it (the page's side of that interface)
    signin = WayOut("signin", {"provider": "Example ID", "href": "/.well-known/popgate/oidc/example/start"})
    gw.gateway.registry.way_out_providers.append(lambda ctx, match: signin)
    target = url_of(gw, "/slow/page")  # 30 bits: still working while axe runs
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            ctx = await browser.new_context(
                extra_http_headers={"Accept-Language": "de-CH, de;q=0.9, en;q=0.5"},
                viewport={"width": 900, "height": 1000},
                bypass_csp=True,  # to inject axe-core; the World ID test runs under the CSP
            )
            page = await ctx.new_page()
            first = await page.goto(target)
            assert first is not None and first.status == 402
            h = first.headers
            assert h["content-language"] == "de" and "script-src 'self'" in h["content-security-policy"]
            assert "unsafe-inline" not in h["content-security-policy"] and h["server"] == "popgate"
            assert await page.get_attribute("html", "lang") == "de"
            await page.locator("#popgate-status").filter(has_text="Berechnung").wait_for(timeout=20_000)
            await screenshot(page, "challenge-de.png")
            assert await axe_violations(page) == []
            await page.emulate_media(color_scheme="dark")
            await screenshot(page, "challenge-dark.png")
            assert await axe_violations(page) == []

            await page.click("a[hreflang=fr]")
            assert await page.get_attribute("html", "lang") == "fr"
            assert "Nous vérifions" in await page.inner_text("h1")

            # keyboard only: Tab reaches the World ID button, the sign-in link, the language links
            reached = []
            for _ in range(20):
                await page.keyboard.press("Tab")
                reached.append(await page.evaluate(FOCUSED))
            assert "popgate-worldid" in reached and "lang:de" in reached, reached
            assert "/.well-known/popgate/oidc/example/start?return=/slow/page" in reached, reached
            # the pay and credits panels (rendered as a charged route shows them): axe-clean too
            await page.set_content(
                cp.ChallengePage().page("en", PAID_WAYS, "/paid/x", "https://gw.example/paid/x")
            )
            await screenshot(page, "challenge-pay.png")
            assert await axe_violations(page) == []
            # an easy puzzle completes with no input at all (nothing needs a pointer)
            await page.goto(url_of(gw, "/docs/page"))
            await page.get_by_text("PoP-Class").wait_for(timeout=30_000)
        finally:
            await browser.close()
    assert (STATIC / "challenge.js").exists()
