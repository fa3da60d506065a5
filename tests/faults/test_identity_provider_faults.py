"""Outside services popgate depends on, failing for real over loopback:

* the zkLogin provider's JWKS endpoint down (closed port), slower than the
  fetch timeout (``[zklogin] jwks_timeout``), back, then down again
  while a cached key set is within / past ``jwks_max_stale``;
* the x402 facilitator slower than the settle timeout;
* the Sui RPC (``epoch_mode = "sui"``) down, slow, back, and away past
  ``sui_epoch_max_stale``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

from aiohttp import web

from tests.conftest import session_token, url_of
from tests.faults.support import sample
from tests.gateway.payments.test_fees_x402 import paid_gateway, signed_header
from tests.gateway.schemes.test_zklogin import AUD, ENDPOINT, ISS, RSA_KEY, Client, jwk_of
from tests.support.facilitator import FacilitatorState, make_app
from tests.support.servers import free_port, serve_app

FETCH_TIMEOUT = 1.5  # [zklogin] jwks_timeout below (the default is 5 s)


class Jwks:
    """A JWKS endpoint whose answer can be delayed; counts hits."""

    def __init__(self) -> None:
        self.delay, self.hits = 0.0, 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"keys": [jwk_of(RSA_KEY, "k1")]}, headers={"Cache-Control": "max-age=30"})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/jwks", self.handle)
        return app


def zk_toml(url: str) -> str:
    return f"""
[zklogin]
allow_http_jwks = true
session_ttl = 600
rate_limit = 1000
jwks_max_stale = 60
jwks_timeout = {FETCH_TIMEOUT}
[[zklogin.providers]]
issuer = "{ISS}"
audience = "{AUD}"
jwks_url = "{url}"
"""


async def exchange(http, gw) -> tuple[int, str | None, float]:
    t0 = time.monotonic()
    async with asyncio.timeout(FETCH_TIMEOUT * 3):
        async with http.post(url_of(gw, ENDPOINT), json=Client().exchange_body()) as r:
            data = await r.json(content_type=None)
            return r.status, data.get("reason"), time.monotonic() - t0


async def test_jwks_down_slow_back_and_stale(upstream, gateway_factory, http):
    """(a) JWKS port closed: 8 concurrent exchanges → 503 ``jwks_unavailable``
    at once. (b) JWKS answers after 2.5 s (> the configured ``jwks_timeout``
    of 1.5 s): 8 concurrent exchanges share one fetch and all get 503 after
    ~1.5 s (no queue of fetches), while store-free traffic is served at once.
    (c) JWKS back: 200. (d) JWKS down again, cached set 40 s old (expired at
    30 s, within ``jwks_max_stale`` = 60): served stale, 200. (e) 100 s
    later (past expiry + max_stale): 503 ``jwks_unavailable``. Never a 500."""
    port = free_port()
    gw = await gateway_factory(upstream, extra=zk_toml(f"http://127.0.0.1:{port}/jwks"))
    plain = session_token(gw)
    jwks = Jwks()

    # (a) nothing listening
    t0 = time.monotonic()
    down = await asyncio.gather(*(exchange(http, gw) for _ in range(8)))
    assert Counter((s, r) for s, r, _ in down) == {(503, "jwks_unavailable"): 8}
    assert time.monotonic() - t0 < 2.0

    async with serve_app(jwks.app(), port=port):
        # (b) slower than the fetch timeout
        jwks.delay = FETCH_TIMEOUT + 1.0

        async def plain_get() -> float:
            await asyncio.sleep(0.5)
            t = time.monotonic()
            async with http.get(url_of(gw, "/"), headers={"Authorization": f"PoP {plain}"}) as r:
                assert r.status == 200
            return time.monotonic() - t

        t0 = time.monotonic()
        slow, plain_took = await asyncio.gather(
            asyncio.gather(*(exchange(http, gw) for _ in range(8))), plain_get()
        )
        took = time.monotonic() - t0
        assert Counter((s, r) for s, r, _ in slow) == {(503, "jwks_unavailable"): 8}
        assert took < FETCH_TIMEOUT + 2.0, f"exchanges queued behind the slow JWKS: {took:.1f}s"
        assert took > FETCH_TIMEOUT - 0.3, "the configured jwks_timeout decides when to give up"
        assert jwks.hits == 1, "concurrent lookups share one fetch"
        assert plain_took < 1.0
        # (c) back
        jwks.delay = 0.0
        status, reason, _ = await exchange(http, gw)
        assert status == 200, reason
    # (d) down again, within max_stale
    real = gw.gateway.clock
    gw.gateway.clock = lambda: real() + 40
    status, reason, took = await exchange(http, gw)
    assert status == 200, reason
    assert took < 2.0
    # (e) past expiry + max_stale
    gw.gateway.clock = lambda: real() + 100
    status, reason, _ = await exchange(http, gw)
    assert (status, reason) == (503, "jwks_unavailable")
    reg = gw.gateway.metrics.registry
    assert sample(reg, "popgate_evidence_total", {"scheme": "zklogin", "result": "jwks_unavailable"}) == 17
    assert sample(reg, "popgate_responses_total", {"code": "5xx"}) == 17  # every 5xx was a 503 above


@contextlib.asynccontextmanager
async def committed_facilitator(state: FacilitatorState):
    """The test facilitator, but one that (like a real one) finishes what it
    was asked once it has the request, whether or not the caller hung up."""

    @web.middleware
    async def finish_anyway(request, handler):
        await request.read()
        return await asyncio.shield(handler(request))

    app = make_app(state)
    app.middlewares.append(finish_anyway)
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}", state


def x402_rail(gw):
    return next(e.x402 for e in gw.gateway.enforcers if getattr(e, "x402", None) is not None)


async def slow_paid_gateway(gateway_factory, upstream, fac):
    return await paid_gateway(gateway_factory, upstream, fac, settle_timeout="1.0")


async def pay(http, gw, path: str, header: str) -> tuple[int, str | None, str | None, float]:
    t0 = time.monotonic()
    async with asyncio.timeout(10):
        async with http.get(url_of(gw, path), headers={"PAYMENT-SIGNATURE": header}) as r:
            data = await r.json(content_type=None)
            return r.status, data.get("reason"), r.headers.get("Retry-After"), time.monotonic() - t0


async def test_slow_facilitator_is_bounded(upstream, gateway_factory, http):
    """x402, settle = before, the facilitator answers /settle after 2.5 s and
    the settle timeout is 1 s: 6 concurrent payments each get 503
    ``settlement_pending`` + Retry-After within the timeout (no queue),
    nothing reaches the origin, never a 500, and the gateway answers other
    requests meanwhile. The records are kept: the facilitator (which finished
    each settle anyway) settled every payment exactly once, and the worker
    reconciles all six from its "nonce already used" answers."""
    state = FacilitatorState(latency=2.5)
    async with committed_facilitator(state) as (fac, st):
        gw = await slow_paid_gateway(gateway_factory, upstream, fac)
        headers = [await signed_header(url_of(gw, f"/paid/{i}")) for i in range(6)]
        t0 = time.monotonic()
        results, other = await asyncio.gather(
            asyncio.gather(*(pay(http, gw, f"/paid/{i}", h) for i, h in enumerate(headers))),
            http.get(url_of(gw, "/paid/free")),
        )
        took = time.monotonic() - t0
        assert {(s, r) for s, r, *_ in results} == {(503, "settlement_pending")}, results
        assert all(ra and int(ra) >= 1 for _, _, ra, _ in results)
        assert took < 2.0, f"payments queued behind the slow facilitator: {took:.1f}s"
        assert other.status == 402  # unpaid: answered at once, not stuck behind the settles
        other.release()
        assert st.calls["settle"] >= 6  # the worker goes on asking for the held ones
        reg = gw.gateway.metrics.registry
        assert sample(reg, "popgate_responses_total", {"code": "5xx"}) == 6
        state.latency = 0.0
        queue = await x402_rail(gw).queue()
        for _ in range(200):
            if len(st.settled) == 6 and not await queue.pending():
                break
            await asyncio.sleep(0.05)
        assert len(st.settled) == 6 and len({p["nonce"] for p in st.settled}) == 6
        assert await queue.pending() == []


async def test_payment_settled_after_a_timeout_is_not_lost(upstream, gateway_factory, http):
    """The facilitator finishes the settle it was sent after popgate gave up
    (1 s timeout, 2.5 s latency): the client was told 503 "retry"; its retry
    of the same payment should be served (it has paid), not refused."""
    state = FacilitatorState(latency=2.5)
    async with committed_facilitator(state) as (fac, st):
        gw = await slow_paid_gateway(gateway_factory, upstream, fac)
        header = await signed_header(url_of(gw, "/paid/late"))
        assert (await pay(http, gw, "/paid/late", header))[:2] == (503, "settlement_pending")
        for _ in range(60):
            if st.settled:
                break
            await asyncio.sleep(0.05)
        assert len(st.settled) == 1, "the facilitator settled it after all: the payer has paid"
        state.latency = 0.0
        status, reason, *_ = await pay(http, gw, "/paid/late", header)
        assert status in (200, 402) and status != 500
        assert status == 200, f"paid but refused: {status} {reason}"
        assert len(st.settled) == 1
        # a third copy of the payment buys nothing more
        assert (await pay(http, gw, "/paid/late", header))[:2] == (402, "payment_rejected")


class SuiRpc:
    """A Sui JSON-RPC endpoint whose answer can be delayed; counts hits."""

    def __init__(self) -> None:
        self.delay, self.hits, self.epoch = 0.0, 0, 800

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"epoch": str(self.epoch)}})

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/", self.handle)
        return app


async def test_sui_rpc_down_slow_back_and_stale(upstream, gateway_factory, http):
    """``epoch_mode = "sui"`` reading the epoch from a Sui RPC (cache 0.5 s, timeout 1 s,
    max stale 3 s). (a) RPC port closed: 6 concurrent exchanges → 503 ``epoch_unavailable``
    at once. (b) RPC up: 200. (c) RPC slower than the timeout: 6 concurrent exchanges share
    one read, and the last known epoch serves them all (200) within ~the timeout. (d) Past
    max stale with the RPC still slow: 503. (e) RPC back: 200. Never a 500."""
    jwks, rpc = Jwks(), SuiRpc()
    rpc_port = free_port()
    async with serve_app(jwks.app()) as jport:
        sui = (
            f'epoch_mode = "sui"\nsui_rpc = "http://127.0.0.1:{rpc_port}/"\n'
            "sui_epoch_cache = 0.5\nsui_rpc_timeout = 1.0\nsui_epoch_max_stale = 3\n"
        )
        toml = zk_toml(f"http://127.0.0.1:{jport}/jwks").replace("[zklogin]\n", "[zklogin]\n" + sui, 1)
        gw = await gateway_factory(upstream, extra=toml)

        async def burst(n: int) -> tuple[Counter, float]:
            t0 = time.monotonic()
            clients = [Client() for _ in range(n)]
            for c in clients:
                c.max_epoch = 805
            out = await asyncio.gather(*(post(http, gw, c.exchange_body()) for c in clients))
            return Counter(out), time.monotonic() - t0

        got, took = await burst(6)  # (a)
        assert got == {(503, "epoch_unavailable"): 6} and took < 2.0
        async with serve_app(rpc.app(), port=rpc_port):
            await asyncio.sleep(0.6)  # the retry pause
            got, _ = await burst(1)  # (b)
            assert got == {(200, None): 1} and rpc.hits == 1
            read_at = time.monotonic()
            rpc.delay = 2.5
            await asyncio.sleep(0.6)  # cache expired
            got, took = await burst(6)  # (c)
            assert got == {(200, None): 6}, got
            assert rpc.hits == 2, "six exchanges shared one read"
            assert took < 2.5, f"exchanges queued behind the slow RPC: {took:.1f}s"
            await asyncio.sleep(max(0.0, read_at + 3.2 - time.monotonic()))
            got, _ = await burst(1)  # (d)
            assert got == {(503, "epoch_unavailable"): 1}
            rpc.delay = 0.0
            await asyncio.sleep(0.6)
            got, _ = await burst(1)  # (e)
            assert got == {(200, None): 1}
    reg = gw.gateway.metrics.registry
    assert sample(reg, "popgate_evidence_total", {"scheme": "zklogin", "result": "epoch_unavailable"}) == 7
    assert sample(reg, "popgate_responses_total", {"code": "5xx"}) == 7  # each a 503 above


async def post(http, gw, body) -> tuple[int, str | None]:
    async with http.post(url_of(gw, ENDPOINT), json=body) as r:
        data = await r.json(content_type=None)
        return r.status, (data.get("reason") if r.status != 200 else None)
