"""Upstream pool starvation: a flood of clients dripping request bodies, or
anonymous requests held open at a slow origin, must not stall a session
holder's requests. Real gateway, real demo origin, real sockets on loopback."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest

from tests.conftest import session_token, url_of

ALLOW = '[policy]\ndefault = "allow"\n'


async def drip(port: int, stop: asyncio.Event) -> tuple[bytes, float]:
    """POST a 1000-byte body one byte every 2 s; the status line and when it came."""
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /.well-known/drip HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\na")
        await writer.drain()
        read = asyncio.ensure_future(reader.readline())
        while not stop.is_set():
            done, _ = await asyncio.wait({read}, timeout=2.0)
            if done:
                return read.result(), time.monotonic() - t0
            writer.write(b"a")
            await writer.drain()
        read.cancel()
        return b"", time.monotonic() - t0
    except (ConnectionError, RuntimeError):
        return b"reset", time.monotonic() - t0
    finally:
        writer.close()


@pytest.mark.parametrize("client_kind", ["lean", "aiohttp"])
async def test_drip_flood_does_not_starve_session_holders(upstream, gateway_factory, http, client_kind):
    """300 anonymous clients drip bodies to a proxied /.well-known/ path at a pool
    of 16: every one of a session holder's requests meanwhile succeeds within 2 s
    (was: the pool is held until read_timeout and they all stall); each dripper
    is refused (429 network_busy over the per-network cap, else 408 body_too_slow
    after body_grace) without holding an upstream connection. Both upstream clients."""
    extra = ALLOW + "[limits]\npool_size = 16\n"  # the rest: defaults
    gw = await gateway_factory(upstream, extra=extra, server_extra=f'upstream_client = "{client_kind}"')
    port = gw.proxy.addresses[0][1]
    token = session_token(gw)
    stop = asyncio.Event()
    flood = [asyncio.create_task(drip(port, stop)) for _ in range(300)]
    await asyncio.sleep(0.5)
    took = []
    timeout = aiohttp.ClientTimeout(total=5)
    try:
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            async with http.get(
                url_of(gw, "/account/page"), headers={"Authorization": f"PoP {token}"}, timeout=timeout
            ) as r:
                assert r.status == 200
                assert (await r.json())["pop"]["PoP-Class"] == "human"
            took.append(time.monotonic() - t0)
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        results = await asyncio.gather(*flood)
    assert len(took) >= 10 and max(took) < 2.0, took
    statuses = [line.split(b" ")[1] if line.startswith(b"HTTP/1.1") else line for line, _ in results]
    # one network: the first network_requests (64) are admitted and cut when too slow
    assert statuses.count(b"408") == 64 and statuses.count(b"429") == 236, set(statuses)
    assert max(t for _, t in results) < 8.0


async def _hold(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as r:
        await r.read()
        return r.status


async def _problem(http: aiohttp.ClientSession, url: str, **kw) -> tuple[int, str, str | None, float]:
    t0 = time.monotonic()
    async with http.get(url, **kw) as r:
        body = await r.json(content_type=None)
        return r.status, body.get("reason", ""), r.headers.get("Retry-After"), time.monotonic() - t0


async def test_pool_wait_deadline_reserved_share_and_network_cap(upstream, gateway_factory, http):
    """pool_size 4, half reserved, 3 anonymous per network: two anonymous requests
    held at a slow origin fill the open share; a third anonymous one waits at most
    pool_wait and gets 503 upstream_busy + Retry-After; a session holder is served
    at once from the reserved share; a fourth anonymous one in flight from the
    network gets 429 network_busy at once."""
    extra = ALLOW + "[limits]\npool_size = 4\npool_reserved = 0.5\npool_wait = 0.5\nnetwork_requests = 3\n"
    gw = await gateway_factory(upstream, extra=extra)
    slow = url_of(gw, "/slow?delay=3")
    held = [asyncio.create_task(_hold(http, slow)) for _ in range(2)]
    await asyncio.sleep(0.3)
    waiting = asyncio.create_task(_problem(http, url_of(gw, "/anon")))
    await asyncio.sleep(0.1)
    status, reason, _, _ = await _problem(http, url_of(gw, "/anon2"))
    assert (status, reason) == (429, "network_busy")
    token = session_token(gw)
    status, _, _, took = await _problem(http, url_of(gw, "/mine"), headers={"Authorization": f"PoP {token}"})
    assert status == 200 and took < 0.5
    status, reason, retry, took = await waiting
    assert (status, reason) == (503, "upstream_busy") and retry is not None and 0.4 < took < 1.5
    assert await asyncio.gather(*held) == [200, 200]
    status, _, _, _ = await _problem(http, url_of(gw, "/anon"))
    assert status == 200, "slots and the network's count are given back"


async def test_dripped_body_holds_no_upstream_connection(upstream, gateway_factory, http):
    """pool_size 1, nothing reserved: while a body drips, another anonymous request
    is served at once (the body is read before a connection is taken); the dripper
    gets 408 body_too_slow as problem+json after body_grace."""
    extra = ALLOW + "[limits]\npool_size = 1\npool_reserved = 0\nbody_grace = 1.0\n"
    gw = await gateway_factory(upstream, extra=extra)
    stop = asyncio.Event()
    dripper = asyncio.create_task(drip(gw.proxy.addresses[0][1], stop))
    await asyncio.sleep(0.3)
    status, _, _, took = await _problem(http, url_of(gw, "/other"), timeout=aiohttp.ClientTimeout(total=5))
    assert status == 200 and took < 0.5
    line, when = await asyncio.wait_for(dripper, 6)
    assert line.startswith(b"HTTP/1.1 408") and 0.9 < when < 4.0
