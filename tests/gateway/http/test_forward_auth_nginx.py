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
from tests.support.paid_gateway import ChargePolicy
from tests.support.servers import free_port, serve_app, write_config
from tests.support.facilitator import running as facilitator

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
            if not inline:
                path.write_text(re.sub(r'upstream = "[^"]*"', 'mode = "auth"', path.read_text()))
            gw = await gateway_factory("", config=load_config(path))
            e = Edge("", gw)
            gw.gateway.registry.observers.append(lambda ctx, response: e.calls.append(_call(ctx, response)))
            listen = free_port()
            (tmp_path / f"e{listen}").mkdir()
            popgate = int(gw.proxy.addresses[0][1])
            stack.enter_context(
                nginx(tmp_path / f"e{listen}", listen, popgate, int(origin.rsplit(":", 1)[1]), cache=cache)
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
    is not served from the cache. Each client request is decided once (the render call hands
    back the sealed answer), so a budget of 3 allows 3 requests, throttled or not."""
    e = await edge(upstream, extra=puzzle_extra(tmp_path))
    codec, now = e.gw.gateway.services.sessions, e.gw.gateway.clock()
    budgeted = f"PoP {codec.issue(klass='human', subject='human:b', now=now, ttl=600, budget=3)}"
    got = [(await _get(http, e(path), Authorization=budgeted))[0] for path in ("/feed", "/feed", "/api/x")]
    assert got == [200, 429, 200], "the 429 took one step of the budget, not two"
    status, body = await _get(http, e("/api/x"), Authorization=budgeted)
    assert (status, body["reason"]) == (402, "session_budget_spent")
    assert e.decisions() == ["allow", "throttle", "allow", "challenge"]
    assert e.calls.count("render") == 2
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
