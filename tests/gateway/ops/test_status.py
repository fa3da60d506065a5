"""The operator status page (``/status`` on the admin listener) and ``/status.json``.

The browser test drives real headless Chromium (Debian ``chromium``, the
``playwright`` package) against a gateway that served real requests, checks
that the page renders those numbers, and saves a screenshot to a temporary
path (``POPGATE_UPDATE_SCREENSHOTS=1`` also refreshes deploy/docs/status-page.png).
Without chromium or playwright it FAILS with instructions; it never skips.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.ops.status import summarize
from popgate.verifiers import puzzle
from tests.conftest import admin_url, session_token, url_of
from tests.gateway.schemes.puzzle_support import POLICY, puzzle_extra, way
from tests.support.browser import ARGS, CHROMIUM, playwright

COMMITTED = Path(__file__).resolve().parents[3] / "deploy" / "docs" / "status-page.png"
JSON = {"Accept": "application/json"}


def test_summary_of_a_registry() -> None:
    """The summary adds up requests by class and decision, fees, and estimates quantiles."""
    m = Metrics()
    for _ in range(3):
        m.count_request("unknown", "challenge", 402, 0.001)
    m.count_request("human", "allow", 200, 0.004)
    m.fees.labels("x402", "api").inc(1500)
    m.difficulty.labels("global").set(18)
    for v in (0.001, 0.002, 0.004, 0.2):
        m.verify_seconds.labels("worldid").observe(v)
    s = summarize(m.registry, now=1.0)
    assert s["requests_total"] == 4
    assert s["requests"] == {"unknown": {"challenge": 3}, "human": {"allow": 1}}
    assert s["decisions"] == {"challenge": 3, "allow": 1}
    assert s["fees"] == {"x402": {"api": 1500}} and s["fees_total"] == 1500
    assert s["difficulty"] == {"global": 18}
    v = s["verification"]["worldid"]
    assert v["count"] == 4 and 1.0 <= v["p50_ms"] <= 2.5 and 100 <= v["p95_ms"] <= 250


async def drive(gw, http, tmp_path) -> int:  # type: ignore[no-untyped-def]
    """Real traffic: unverified clients (402), a solved puzzle, requests with sessions."""
    sent = 0
    for path in ("/", "/v1/items", "/v1/items", "/open/a", "/robots.txt"):
        async with http.get(url_of(gw, path), headers=JSON) as r:
            await r.read()
            sent += 1
            if path == "/v1/items":
                body = json.loads(await r.read())
    p = way(body, "puzzle")
    nonces, _ = await asyncio.to_thread(puzzle.solve, p["challenge"], p["bits"], p["subs"])
    async with http.get(
        url_of(gw, "/v1/items"), headers={"PoP-Puzzle": f"{p['challenge']}:{','.join(nonces)}"}
    ) as r:
        assert r.status == 200
        sent += 1
    token = session_token(gw)
    for _ in range(6):
        async with http.get(url_of(gw, "/v1/items"), headers={"Authorization": f"PoP {token}"}) as r:
            assert r.status == 200
            sent += 1
    return sent


async def test_status_json_reflects_served_requests(upstream, gateway_factory, http, tmp_path):
    """After real requests, /status.json counts them by class, decision and policy rule."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path, policy=POLICY))
    sent = await drive(gw, http, tmp_path)
    async with http.get(admin_url(gw, "/status.json")) as r:
        assert r.status == 200 and r.headers["Cache-Control"] == "no-store"
        s = await r.json()
    assert s["requests_total"] == sent
    assert s["requests"]["human"]["allow"] == 6
    assert s["decisions"]["challenge"] >= 2
    rules = {r["rule"]: r["requests"] for r in s["routes"]}
    assert rules["v1"] >= 9
    assert s["latency"]["allow"]["count"] >= 7 and s["latency"]["allow"]["p50_ms"] > 0
    assert s["evidence"]["puzzle"]["ok"] >= 1
    async with http.get(admin_url(gw, "/status")) as r:
        assert r.status == 200 and r.content_type == "text/html"
        assert "status.json" in await r.text()


async def test_status_page_renders_live_numbers_in_chromium(upstream, gateway_factory, http, tmp_path):
    """Headless Chromium opens /status on a gateway that served real requests: the tiles and
    charts show the numbers /status.json reports, and the rate chart draws a line."""
    async_playwright = playwright()
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path, policy=POLICY))
    sent = await drive(gw, http, tmp_path)

    async def background() -> None:
        while True:
            async with http.get(url_of(gw, "/v1/x"), headers=JSON) as r:
                await r.read()
            await asyncio.sleep(0.05)

    traffic = asyncio.create_task(background())
    shot = tmp_path / "status-page.png"
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                resp = await page.goto(admin_url(gw, "/status"))
                assert resp is not None and resp.status == 200
                await page.wait_for_function("document.body.dataset.loaded === '1'", timeout=20_000)
                await page.wait_for_function(  # three polls: a line of two rate points
                    "[...document.querySelectorAll('#chart-rate polyline')]"
                    ".some((l) => l.points.length >= 2)",
                    timeout=20_000,
                )
                shown = int((await page.inner_text("#kpi-requests")).replace(",", ""))
                assert shown >= sent, (shown, sent)
                async with http.get(admin_url(gw, "/status.json")) as r:
                    truth = await r.json()
                assert shown <= truth["requests_total"]
                human = await page.get_attribute(
                    "#chart-classes rect[data-row='human'][data-key='allow']", "data-value"
                )
                assert human is not None and float(human) >= 6
                challenged = int((await page.inner_text("#kpi-challenged")).replace(",", ""))
                assert challenged >= 2
                assert await page.locator("#chart-routes text[data-row='v1']").count() == 1
                # verification latency: whatever schemes timed their checks (session and puzzle
                # checks are not timed by the core Verify stage), or the empty-state note
                verify = await page.inner_text("#chart-verify")
                for scheme in truth["verification"]:
                    assert scheme in verify
                if not truth["verification"]:
                    assert "no data yet" in verify
                latency = await page.inner_text("#chart-latency")
                assert "allow" in latency and "challenge" in latency
                assert await page.locator("#chart-difficulty rect").count() >= 1
                await page.screenshot(path=str(shot), full_page=True)
            finally:
                await browser.close()
    finally:
        traffic.cancel()
    assert shot.stat().st_size > 10_000
    if os.environ.get("POPGATE_UPDATE_SCREENSHOTS"):
        COMMITTED.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, COMMITTED)
