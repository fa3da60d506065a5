"""What only the nginx pattern has, with the shipped deploy/forward-auth/nginx-popgate-auth.conf
for real: the verdict cache, one decision per client request (sealed refusals), payments
settled at the auth step, the inline hand-off with its refund, and headless Chromium solving
the challenge page through nginx. Every call popgate answers is counted at popgate."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from x402.http.clients import x402HttpxClient

from popgate.gateway.http.server import Running
from popgate.gateway.ops.config import load_config
from tests.conftest import admin_url, session_token
from tests.gateway.payments.test_fees_x402 import sdk, x402_toml
from tests.gateway.schemes.puzzle_support import puzzle_extra
from tests.support.browser import ARGS, CHROMIUM, playwright
from tests.support.edges import UA, nginx
from tests.support.facilitator import running as facilitator
from tests.support.paid_gateway import ChargePolicy
from tests.support.servers import free_port, serve_app, write_config

TOKEN = "t" * 40
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Edge:
    url: str  # nginx: what clients talk to
    gw: Running  # popgate behind it
    calls: list[str] = field(default_factory=list)  # what popgate answered nginx, in order

    def __call__(self, path: str) -> str:
        return self.url + path

    def decisions(self) -> list[str]:
        """Calls that decided something (the render calls hand a decision back, they make none)."""
        return [c for c in self.calls if c != "render"]


@pytest.fixture
async def edge(tmp_path: Path, gateway_factory: Any) -> AsyncIterator[Any]:
    """``await edge(origin, extra=..., inline=False, cache=True)``: popgate (auth mode, or
    inline with ``inline``) and the shipped nginx in front, both pointed at ``origin``."""
    if shutil.which("nginx") is None:
        pytest.fail("nginx not installed: `make system-deps` installs it")
    with contextlib.ExitStack() as stack:

        async def make(origin: str, *, extra: str = "", inline: bool = False, cache: bool = True) -> Edge:
            path = write_config(
                tmp_path, origin, extra=extra, server_extra='trusted_proxies = ["127.0.0.1/32"]'
            )
            lean = free_port()
            text = path.read_text().replace("[server]\n", f'[server]\nauth_listen = "127.0.0.1:{lean}"\n', 1)
            if not inline:
                text = re.sub(r'upstream = "[^"]*"', 'mode = "auth"', text)
            path.write_text(text)
            gw = await gateway_factory("", config=load_config(path))
            e = Edge("", gw)
            gw.gateway.registry.observers.append(lambda ctx, response: e.calls.append(_call(ctx, response)))
            listen = free_port()
            (tmp_path / f"e{listen}").mkdir()
            popgate = int(gw.proxy.addresses[0][1])
            stack.enter_context(
                nginx(
                    tmp_path / f"e{listen}",
                    listen,
                    popgate,
                    int(origin.rsplit(":", 1)[1]),
                    cache=cache,
                    auth=lean,
                )
            )
            e.url = f"http://127.0.0.1:{listen}"
            return e

        yield make


def _call(ctx: Any, response: web.StreamResponse) -> str:
    if ctx.request.headers.get("X-Popgate-Auth") == "render":
        return "render"
    return response.headers.get("X-Popgate-Decision") or f"proxied {ctx.request.path} {response.status}"


async def _get(http: Any, url: str, **headers: str) -> tuple[int, dict[str, Any]]:
    async with http.get(url, headers={**UA, **headers}) as r:
        body = await r.read()
        return r.status, json.loads(body) if body[:1] == b"{" else {}


async def test_verdicts_are_reused_per_credential_and_request(edge, upstream, http, tmp_path):
    """A plain session's allow is asked once per (method, host, URI, credential); two sessions
    never share one; refusals are asked every time."""
    e = await edge(upstream)
    alice, bob = (session_token(e.gw, "human", subject=f"human:{n}", ttl=600) for n in ("alice", "bob"))
    for _ in range(3):
        status, seen = await _get(http, e("/api/x"), Cookie=f"popgate_session={alice}")
        assert (status, seen["pop"]["PoP-Subject"]) == (200, "human:alice")
    assert e.decisions() == ["allow"], "two of three answered from nginx's cache"
    status, seen = await _get(http, e("/api/x"), Cookie=f"popgate_session={bob}")
    assert (status, seen["pop"]["PoP-Subject"]) == (200, "human:bob"), "bob never gets alice's verdict"
    status, seen = await _get(http, e("/api/x"), Authorization=f"PoP {bob}")
    assert seen["pop"]["PoP-Subject"] == "human:bob"
    await _get(http, e("/api/x"), Authorization=f"PoP {bob}")
    status, seen = await _get(http, e("/api/y"), Cookie=f"popgate_session={alice}")
    assert e.decisions() == ["allow"] * 4, "a new cookie, a new Authorization, a new URI: asked again"
    for _ in range(2):
        status, body = await _get(http, e("/api/x"), Cookie="popgate_session=forged")
        assert status == 402 and body["reason"] == "invalid_session"
    assert e.decisions()[-2:] == ["challenge", "challenge"], "refusals are never cached"


async def test_budget_throttle_and_expiry_are_enforced_with_the_cache_on(edge, upstream, http, tmp_path):
    """A budgeted session and a throttled route are asked on every request; an expired session
    is not served from the cache. Each client request is decided once (nginx returns the refusal
    carried by the auth answer), so a budget of 3 allows 3 requests, throttled or not."""
    e = await edge(upstream, extra=puzzle_extra(tmp_path))
    codec, now = e.gw.gateway.services.sessions, e.gw.gateway.clock()
    budgeted = f"PoP {codec.issue(klass='human', subject='human:b', now=now, ttl=600, budget=3)}"
    got = [(await _get(http, e(path), Authorization=budgeted))[0] for path in ("/feed", "/feed", "/api/x")]
    assert got == [200, 429, 200], "the 429 took one step of the budget, not two"
    status, body = await _get(http, e("/api/x"), Authorization=budgeted)
    assert (status, body["reason"]) == (402, "session_budget_spent")
    assert e.decisions() == ["allow", "throttle", "allow", "challenge"]
    assert "render" not in e.calls, "problem+json refusals are answered by nginx from the auth answer"
    plain = session_token(e.gw, "human", ttl=600)
    got = [(await _get(http, e("/feed"), Authorization=f"PoP {plain}"))[0] for _ in range(2)]
    assert got == [429, 429], "the route's throttle (per network) holds for a plain session too"
    short = session_token(e.gw, "human", ttl=2)
    assert (await _get(http, e("/api/z"), Authorization=f"PoP {short}"))[0] == 200
    assert (await _get(http, e("/api/z"), Authorization=f"PoP {short}"))[0] == 200
    calls = len(e.decisions())
    await asyncio.sleep(2.2)
    status, body = await _get(http, e("/api/z"), Authorization=f"PoP {short}")
    assert (status, body["reason"]) == (402, "session_expired")
    assert len(e.decisions()) == calls + 1


def _credits_toml(tmp: Path, fac: str) -> str:
    (tmp / "admin").write_text(TOKEN)
    return x402_toml(fac) + f'[credits]\nadmin_token = {{ secret_file = "{tmp / "admin"}" }}\n'


async def _api_key(http: Any, gw: Running, amount: int) -> tuple[str, str]:
    async with http.post(admin_url(gw, "/admin/credits/keys"), json={"amount": amount}, headers=ADMIN) as r:
        assert r.status == 201
        created = await r.json()
    return created["api_key"], created["account"]


async def _balance(http: Any, gw: Running, account: str) -> int:
    async with http.get(admin_url(gw, f"/admin/credits/accounts/{account}"), headers=ADMIN) as r:
        return int((await r.json())["balance"])


@pytest.fixture
async def paid_origin() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """An origin that records the headers it gets and answers 500 on paths ending in /fail."""
    seen: list[dict[str, str]] = []

    async def handler(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(status=500 if request.path.endswith("/fail") else 200, text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}", seen


async def test_x402_and_credits_settle_at_the_auth_step_once(edge, paid_origin, http, tmp_path):
    """Through nginx: the SDK pays with x402 (settled once, PAYMENT-RESPONSE reaches the
    client, PoP-Charged the origin); a pgk_ key is debited once per request and never
    reaches the origin; a short balance is popgate's 402."""
    origin, seen = paid_origin
    async with facilitator() as (fac, st):
        e = await edge(origin, extra=_credits_toml(tmp_path, fac))
        e.gw.gateway.policy.policy = ChargePolicy(10_000)
        async with x402HttpxClient(sdk()) as client:
            resp = await client.get(e("/paid/a"))
        assert resp.status_code == 200, resp.text
        assert resp.headers["PAYMENT-RESPONSE"], "the receipt is copied back to the client"
        assert len(st.settled) == 1 and st.settled[0]["value"] == "10000"
        assert seen[-1]["PoP-Charged"] == "10000"
        assert not {"PAYMENT-SIGNATURE", "X-PAYMENT"} & {k.upper() for k in seen[-1]}
        key, account = await _api_key(http, e.gw, 25_000)
        for path in ("/paid/b", "/paid/c"):
            async with http.get(e(path), headers={"Authorization": f"Bearer {key}"}) as r:
                assert r.status == 200
            assert seen[-1]["PoP-Charged"] == "10000" and "Authorization" not in seen[-1]
        async with http.get(e("/paid/d"), headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 402 and (await r.json())["reason"] == "insufficient_credits"
        assert await _balance(http, e.gw, account) == 5_000, "debited exactly once per request"
        assert len(seen) == 3 and len(st.settled) == 1


async def test_inline_route_goes_through_popgate_and_is_refunded(edge, paid_origin, http, tmp_path):
    """[forward_auth] inline_routes: the auth step charges nothing and answers 403; nginx sends the
    request through popgate inline, which debits once, and refunds when the origin fails."""
    origin, seen = paid_origin
    async with facilitator() as (fac, _):
        extra = _credits_toml(tmp_path, fac) + '[forward_auth]\ninline_routes = ["paid"]\n'
        e = await edge(origin, extra=extra, inline=True)
        e.gw.gateway.policy.policy = ChargePolicy(10_000)
        key, account = await _api_key(http, e.gw, 25_000)
        async with http.post(e("/paid/a"), headers={"Authorization": f"Bearer {key}"}, data=b"body") as r:
            assert r.status == 200, e.calls
        assert seen[-1]["PoP-Charged"] == "10000" and "Authorization" not in seen[-1]
        async with http.get(e("/paid/fail"), headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 500
        await asyncio.sleep(0.2)  # the refund runs after the response
        assert await _balance(http, e.gw, account) == 15_000, "one debit kept, the failed one refunded"
        assert e.calls == ["inline", "proxied /paid/a 200", "inline", "proxied /paid/fail 500"]
        async with http.get(e("/free"), headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200
        assert e.calls[-1] == "allow", "other routes are still decided at the auth step"


async def test_browser_solves_the_challenge_page_through_nginx(edge, upstream, tmp_path):
    """Headless Chromium: popgate's page (via the sealed render) → the worker solves the puzzle →
    POST to popgate's endpoint through nginx → cookie → the origin, with PoP-Class; then cached."""
    async_playwright = playwright()
    e = await edge(upstream, extra=puzzle_extra(tmp_path, floor=10))
    target = e("/api/page?from=nginx")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            first = await page.goto(target)
            assert first is not None and first.status == 402
            assert "text/html" in (first.headers.get("content-type") or "")
            await page.wait_for_url("**/api/page?from=nginx", timeout=60_000)
            await page.get_by_text("PoP-Class").wait_for(
                timeout=60_000
            )  # a locator: the page's CSP forbids eval
            info = json.loads(await page.inner_text("body"))
            assert info["pop"]["PoP-Class"] == "unknown" and info["pop"]["PoP-Evidence"] == "puzzle"
            assert info["path"] == "/api/page?from=nginx"
            assert "popgate_session" not in info["headers"].get("Cookie", ""), "the cookie stays at the edge"
            assert "popgate_session" in {c["name"] for c in await context.cookies()}
            again = await page.reload()
            assert again is not None and again.status == 200
        finally:
            await browser.close()
    assert e.decisions()[0] == "challenge" and e.decisions()[-1] == "allow"
    assert e.calls[1] == "render", "the HTML page went sealed to the render call"
