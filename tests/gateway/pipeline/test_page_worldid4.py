"""The challenge page on IDKit 4 in headless Chromium: the vendored @worldcoin/idkit-core 4.3.0
(and its WASM core) served by popgate under the strict CSP, the page's own QR code and phone
link, the SDK's bridge polls answered by the test (``page.route``) with a World ID 4.0 proof
(local fixture) encrypted under the key the SDK put in its connect URL; the page posts the
SDK's result to the exchange endpoint and the origin sees ``PoP-Class: human``. The same
person again gets a sentence. The 4.0 proof is checked locally (chain stand-in, no cloud).

The fixture's proofs were made for nonces popgate issued at the fixture's time with the
fixture's rp key; popgate's nonces carry 8 random bytes, so the test answers the page's
``GET`` of its rp_context (``in_challenge = false``) with the fixture's nonce, signed by the
same key, as popgate would have issued it then (``POST`` goes through untouched).
"""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import url_of
from tests.gateway.pipeline.page_support import POLICY, Bridge, screenshot
from tests.gateway.pipeline.test_page_browser import axe_violations
from tests.gateway.schemes.puzzle_support import puzzle_extra
from tests.gateway.schemes.test_worldid4_local import CASES, FIX, NOW, chain_state, v4_toml
from tests.gateway.schemes.worldid_support import worldid_toml
from tests.support.browser import ARGS, CHROMIUM, playwright
from tests.support.idkit4_bridge import rp_context, v4_answer
from tests.support.servers import serve_app
from tests.support.worldid_chain import make_app

ENDPOINT = "/.well-known/popgate/worldid"


class HeldBridge(Bridge):
    """The bridge says "retrieved" (World App has the request) until ``release`` is set."""

    release = False

    async def _answer(self, request_id: str) -> dict[str, Any]:
        if not self.release:
            return {"status": "retrieved"}
        return await super()._answer(request_id)


def config(tmp: Any, port: int) -> str:
    v4 = v4_toml(tmp, port).replace("[worldid.chain]", "in_challenge = false\n[worldid.chain]")
    return puzzle_extra(tmp, policy=POLICY, floor=10, ceiling=30, extra=v4)


async def prove(
    browser: Any, gw: Any, url: str, case: int, shot: str = "", bypass_csp: bool = False
) -> tuple[Any, Any, HeldBridge, list[str]]:
    context = await browser.new_context(viewport={"width": 1000, "height": 900}, bypass_csp=bypass_csp)
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text))
    page.on("pageerror", lambda e: errors.append(f"pageerror: {e}"))
    page.on("response", lambda r: errors.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    bridge = HeldBridge(page, 0)
    bridge.result = v4_answer(CASES[case]["item"])  # what World App puts on the bridge
    await bridge.install()
    ctx = rp_context(FIX["rp_key"], FIX["rp_id"], CASES[case]["nonce"], FIX["created_at"], FIX["action"])

    async def offer(route: Any) -> None:
        if route.request.method != "GET":
            await route.continue_()
            return
        req = {"action": FIX["action"], "rp_context": ctx}
        await route.fulfill(json={"idkit": await idkit_config(gw) | req})

    await page.route(url_of(gw, ENDPOINT), offer)
    first = await page.goto(url)
    assert first is not None and first.status == 402
    csp = first.headers["content-security-policy"]
    assert "script-src 'self' 'wasm-unsafe-eval';" in csp and "'unsafe-eval'" not in csp, csp
    assert "unsafe-inline" not in csp and "default-src 'none'" in csp
    await page.click("#popgate-worldid")
    try:
        await page.wait_for_selector("#popgate-qr", timeout=20_000)
    except Exception:
        raise AssertionError((await page.locator("#popgate-prove-status").inner_text(), errors)) from None
    if shot:
        await screenshot(page, shot, full_page=False)
    return context, page, bridge, errors


async def idkit_config(gw: Any) -> dict[str, Any]:
    s = gw.gateway.services.config.features.worldid
    return {"app_id": s.app_id, "allow_legacy_proofs": s.legacy, "environment": "production"}


async def test_idkit4_page_end_to_end(upstream, gateway_factory, tmp_path):
    async_playwright = playwright()
    async with serve_app(make_app(chain_state())) as port:
        gw = await gateway_factory(upstream, extra=config(tmp_path, port))
        gw.gateway.clock = lambda: NOW
        assert gw.gateway.services.config.features.worldid.cloud_verify_url == ""
        target = url_of(gw, "/human/report?x=1")
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            try:
                # axe-core on the page showing the QR code (injecting axe needs bypass_csp)
                context, page, _, _ = await prove(browser, gw, target, 0, bypass_csp=True)
                assert not await axe_violations(page)
                await context.close()

                context, page, bridge, csp_errors = await prove(
                    browser, gw, target, 0, "challenge-worldid4.png"
                )
                link = await page.locator(
                    '#popgate-connect a[href^="https://world.org/verify"]'
                ).get_attribute("href")
                assert link and "&k=" in link, link
                # the QR code is the connect URL: decoded from the canvas pixels by jsQR (node)
                assert await decode_qr(page) == link
                bridge.release = True  # World App answers
                await page.get_by_text("PoP-Class").wait_for(timeout=30_000)  # the origin's page
                info = json.loads(await page.inner_text("body"))
                assert info["pop"]["PoP-Class"] == "human" and info["pop"]["PoP-Evidence"] == "worldid"
                assert info["path"] == "/human/report?x=1"
                assert bridge.requests and set(bridge.requests[0]) == {"iv", "payload"}
                assert not [e for e in csp_errors if "Content Security Policy" in e], csp_errors
                await context.close()

                # the same person, a fresh request (another nonce): a sentence, not JSON
                context, page, bridge, _ = await prove(browser, gw, target, 1)
                bridge.release = True
                status = page.locator("#popgate-prove-status")
                await status.filter(has_text="already used").wait_for(timeout=30_000)
                assert "{" not in await status.inner_text()
                assert await page.locator("#popgate-connect").is_hidden()
                await context.close()

                # the person declines in World App: the SDK reports it, the page says so
                context, page, bridge, _ = await prove(browser, gw, target, 2)
                bridge.result, bridge.release = {"error_code": "user_rejected"}, True
                await status_text(page, "did not work")
                await context.close()
            finally:
                await browser.close()


async def status_text(page: Any, text: str) -> None:
    await page.locator("#popgate-prove-status").filter(has_text=text).wait_for(timeout=30_000)


async def test_page_data_and_csp_follow_the_offer(upstream, gateway_factory, http, tmp_path):
    """rp_context in the challenge: the page gets it inline and the CSP allows WebAssembly;
    no [worldid.rp]: the IDKit 2 widget as before, and a CSP without 'wasm-unsafe-eval'.
    The vendored IDKit 4 files are served (the WASM core with its own media type)."""
    (tmp_path / "a").mkdir()
    inline = puzzle_extra(
        tmp_path / "a", policy=POLICY, floor=10, ceiling=30, extra=v4_toml(tmp_path / "a", None)
    )
    gw = await gateway_factory(upstream, extra=inline)
    html_accept = {"Accept": "text/html"}
    async with http.get(url_of(gw, "/human/x"), headers=html_accept) as r:
        page, csp = await r.text(), r.headers["Content-Security-Policy"]
    data = json.loads(page.split('id="popgate-data">', 1)[1].split("</script>", 1)[0])
    k = data["worldid"]["idkit4"]
    assert k["rp_context"]["signature"].startswith("0x") and k["rp_context"]["rp_id"] == FIX["rp_id"]
    assert k["script"].endswith("/idkit-core.js") and "'wasm-unsafe-eval'" in csp
    async with http.get(url_of(gw, k["script"].replace("idkit-core.js", "idkit_wasm_bg.wasm"))) as r:
        assert r.status == 200 and r.headers["Content-Type"] == "application/wasm"
        assert (await r.read())[:4] == b"\0asm"
    async with http.get(url_of(gw, k["qrcode"])) as r:
        assert r.status == 200 and "Kazuhiko Arase" in await r.text()  # its licence header stays
    (tmp_path / "b").mkdir()
    legacy = puzzle_extra(tmp_path / "b", policy=POLICY, floor=10, ceiling=30, extra=worldid_toml())
    gw = await gateway_factory(upstream, extra=legacy)
    async with http.get(url_of(gw, "/human/x"), headers=html_accept) as r:
        page, csp = await r.text(), r.headers["Content-Security-Policy"]
    data = json.loads(page.split('id="popgate-data">', 1)[1].split("</script>", 1)[0])
    assert "idkit4" not in data["worldid"] and data["worldid"]["script"].endswith("idkit-standalone.js")
    assert "wasm" not in csp and "script-src 'self';" in csp


async def decode_qr(page: Any) -> str:
    """The text of the page's QR code, decoded by jsQR in node from the canvas' RGBA pixels."""
    from tests.support.node import NODE_DIR, run_node  # why: node only for this check

    pixels = await page.evaluate(
        """() => { const c = document.getElementById('popgate-qr');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height);
        return {width: c.width, height: c.height, data: Array.from(d.data)}; }"""
    )
    out = run_node(NODE_DIR / "qr_decode.mjs", stdin=pixels, timeout=60)
    return str(out["text"])
