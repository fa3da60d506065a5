"""Slow clients (slowloris, slow body) are cut by the client timeouts in
``[limits]``; the gateway keeps serving everyone else meanwhile."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import admin_url, url_of

FAST = """[limits]
client_header_timeout = 0.6
client_body_timeout = 0.6
client_keepalive_timeout = 1.0
[policy]
default = "allow"
"""


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> tuple[bytes, float]:
    """Read until EOF; return what came and how long it took (fail past ``seconds``)."""
    t0 = time.monotonic()
    out = b""
    while True:
        chunk = await asyncio.wait_for(reader.read(65536), seconds)
        if not chunk:
            return out, time.monotonic() - t0
        out += chunk


async def test_slowloris_head_gets_408_and_is_closed(upstream, gateway_factory, http):
    """A head sent one header line at a time, forever, is cut after client_header_timeout."""
    gw = await gateway_factory(upstream, extra=FAST)
    port = gw.proxy.addresses[0][1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n")

    async def drip() -> None:
        for i in range(40):
            await asyncio.sleep(0.1)
            try:
                writer.write(b"X-A%d: b\r\n" % i)
                await writer.drain()
            except (ConnectionError, RuntimeError):
                return

    dripper = asyncio.create_task(drip())
    out, took = await _closed_within(reader, 5)
    dripper.cancel()
    writer.close()
    assert out.startswith(b"HTTP/1.1 408"), out[:100]
    assert 0.5 <= took < 2.5
    async with http.get(admin_url(gw, "/metrics")) as r:
        assert 'popgate_client_timeouts_total{phase="header"} 1.0' in await r.text()


async def test_connection_that_never_speaks_is_closed(upstream, gateway_factory):
    """An accepted connection with no bytes at all is closed after client_header_timeout."""
    gw = await gateway_factory(upstream, extra=FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.addresses[0][1])
    _, took = await _closed_within(reader, 5)
    writer.close()
    assert took < 2.5


async def test_slow_body_is_cut(upstream, gateway_factory, http):
    """A body promised by Content-Length that stalls is cut after client_body_timeout."""
    gw = await gateway_factory(upstream, extra=FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.addresses[0][1])
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
    await writer.drain()
    _, took = await _closed_within(reader, 5)
    writer.close()
    assert took < 2.5
    async with http.get(admin_url(gw, "/metrics")) as r:
        assert 'popgate_client_timeouts_total{phase="body"} 1.0' in await r.text()
    async with http.get(url_of(gw, "/hello")) as r:
        assert r.status == 200


async def test_slow_but_steady_body_is_served(upstream, gateway_factory):
    """A body that keeps coming (a chunk every 0.2 s, 2 s in all) is not cut: the timeout is on silence."""
    gw = await gateway_factory(upstream, extra=FAST)
    reader, writer = await asyncio.open_connection("127.0.0.1", gw.proxy.addresses[0][1])
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nConnection: close\r\n\r\n")
    for i in range(10):
        await asyncio.sleep(0.2)
        writer.write(b"%d" % i)
        await writer.drain()
    out, _ = await _closed_within(reader, 5)
    writer.close()
    assert out.startswith(b"HTTP/1.1 200"), out[:200]
    body = out.partition(b"\r\n\r\n")[2]
    assert b"".join(body.split(b"\r\n")[1::2]) == b"0123456789"  # the chunked echo, de-chunked


async def test_slow_upstream_does_not_count_as_slow_client(upstream, gateway_factory, http):
    """Waiting 1.5 s on the origin is not the client's silence: no cut (body timeout 0.6 s)."""
    gw = await gateway_factory(upstream, extra=FAST)
    async with http.post(url_of(gw, "/slow?delay=1.5"), data=b"x" * 100) as r:
        assert r.status == 200


async def test_many_slowloris_connections_do_not_starve_others(upstream, gateway_factory, http):
    """200 half-open heads at once: a normal client is still served promptly, and all 200 get cut."""
    gw = await gateway_factory(upstream, extra=FAST)
    port = gw.proxy.addresses[0][1]
    conns = []
    for _ in range(200):
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        conns.append((r, w))
    t0 = time.monotonic()
    async with http.get(url_of(gw, "/hello")) as resp:
        assert resp.status == 200
    assert time.monotonic() - t0 < 1.0
    results = await asyncio.gather(*(_closed_within(r, 5) for r, _ in conns))
    for _, w in conns:
        w.close()
    assert all(out.startswith(b"HTTP/1.1 408") for out, _ in results)
