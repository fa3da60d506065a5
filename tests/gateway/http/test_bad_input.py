"""Bad input never yields a 500 or a hang: malformed tokens, smuggling shapes,
broken chunking, dead upstream or store."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import session_token, url_of
from tests.support.servers import free_port


async def raw_exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = b""
    try:
        while True:
            chunk = await asyncio.wait_for(reader.read(65536), timeout)
            if not chunk:
                break
            out += chunk
            if b"\r\n\r\n" in out and (b"Content-Length: " in out or b"chunked" in out):
                head, _, body = out.partition(b"\r\n\r\n")
                if b"Content-Length: " in head:
                    n = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                    if len(body) >= n:
                        break
    finally:
        writer.close()
    return out


def status_of(raw: bytes) -> int:
    return int(raw.split(b" ", 2)[1])


@pytest.mark.parametrize(
    "token",
    [
        "",
        "v1",
        "v1.k1",
        "v1.k1.x.y",
        "v1.k1..",
        "v2.k1.e30.AAAA",
        "v1.k1.e30." + "A" * 43,
        "v1.%%%.e30.x",
        "v1.k1.\u00e9.x",
        "x" * 5000,
        "v1.k1.eyJjIjoiaHVtYW4ifQ.@@@",
    ],
)
async def test_malformed_tokens_get_challenge_not_500(upstream, gateway_factory, http, token):
    """Garbage session tokens are treated as no evidence: 402, never 500."""
    gw = await gateway_factory(upstream)
    async with http.get(url_of(gw, "/"), headers={"Authorization": f"PoP {token}"}) as r:
        assert r.status == 402
        body = await r.json()
    assert body["reason"] in ("invalid_session", "evidence_required")


async def test_expired_session_says_so(upstream, gateway_factory, http):
    """An expired session gets a 402 whose reason tells the client to renew."""
    gw = await gateway_factory(upstream)
    token = session_token(gw, ttl=-1)
    async with http.get(url_of(gw, "/"), headers={"Authorization": f"PoP {token}"}) as r:
        assert r.status == 402
        assert (await r.json())["reason"] == "session_expired"


@pytest.mark.parametrize(
    "request_bytes",
    [
        # conflicting Content-Length and Transfer-Encoding (smuggling shape)
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        # two different Content-Lengths
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        # obfuscated transfer-encoding
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        # header without colon, bare LF line endings
        b"GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n",
        b"GET / HTTP/1.1\nHost: x\n\n",
        # space before colon
        b"GET / HTTP/1.1\r\nHost : x\r\n\r\n",
    ],
)
async def test_smuggling_shapes_rejected_with_400(upstream, gateway_factory, request_bytes):
    """Ambiguous framing is refused with 400 problem+json before anything is forwarded."""
    gw = await gateway_factory(upstream, extra='[policy]\ndefault = "allow"\n')
    raw = await raw_exchange(gw.proxy.addresses[0][1], request_bytes)
    assert status_of(raw) == 400, raw[:200]
    assert b"application/problem+json" in raw


async def test_broken_chunked_body_is_400(upstream, gateway_factory):
    """A chunked body with a bad chunk size: 400, not 500, and the gateway keeps serving."""
    gw = await gateway_factory(upstream, extra='[policy]\ndefault = "allow"\n')
    port = gw.proxy.addresses[0][1]
    raw = await raw_exchange(
        port, b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"
    )
    assert status_of(raw) == 400 or raw == b"", raw[:200]
    ok = await raw_exchange(port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(ok) == 200


async def test_truncated_body_does_not_hang(upstream, gateway_factory):
    """A client that promises 100 bytes and sends 10 then closes: the gateway moves on."""
    gw = await gateway_factory(upstream, extra='[policy]\ndefault = "allow"\n')
    port = gw.proxy.addresses[0][1]
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789")
    await writer.drain()
    writer.close()
    await asyncio.sleep(0.2)
    ok = await raw_exchange(port, b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert status_of(ok) == 200


async def test_budgeted_session_with_dead_store_fails_closed(upstream, gateway_factory, http):
    """A session that needs the store (budget) while Redis is down: 503 + Retry-After by default."""
    gw = await gateway_factory(upstream, store=f"redis://127.0.0.1:{free_port()}/0")
    token = session_token(gw, budget=5)
    async with http.get(url_of(gw, "/"), headers={"Authorization": f"PoP {token}"}) as r:
        assert r.status == 503
        assert "Retry-After" in r.headers
        assert (await r.json())["reason"] == "store_unavailable"
    plain = session_token(gw)
    async with http.get(url_of(gw, "/"), headers={"Authorization": f"PoP {plain}"}) as r:
        assert r.status == 200, "plain sessions never touch the store: a dead store does not stop them"


async def test_budgeted_session_fail_open_is_counted(upstream, gateway_factory, http):
    """With budget = "open", the request passes and popgate_fail_open_total counts it."""
    gw = await gateway_factory(
        upstream, store=f"redis://127.0.0.1:{free_port()}/0", extra='[store.failure_mode]\nbudget = "open"\n'
    )
    token = session_token(gw, budget=5)
    async with http.get(url_of(gw, "/"), headers={"Authorization": f"PoP {token}"}) as r:
        assert r.status == 200
    value = gw.gateway.metrics.registry.get_sample_value("popgate_fail_open_total", {"action": "budget"})
    assert value == 1.0


async def test_session_budget_is_enforced(upstream, gateway_factory, http, redis_url):
    """A budget of 3 admits exactly three requests."""
    gw = await gateway_factory(upstream, store=redis_url)
    token = session_token(gw, budget=3)
    codes = []
    for _ in range(5):
        async with http.get(url_of(gw, "/"), headers={"Authorization": f"PoP {token}"}) as r:
            codes.append(r.status)
    assert codes == [200, 200, 200, 402, 402]


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    headers=st.dictionaries(
        st.text(
            alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=":"),
            min_size=1,
            max_size=20,
        ),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200),
        max_size=10,
    )
)
def test_arbitrary_headers_never_500(headers):
    """Fuzz: arbitrary printable header fields never produce a 500."""
    asyncio.run(_fuzz_once(headers))


async def _fuzz_once(headers: dict[str, str]) -> None:
    import tempfile
    from pathlib import Path

    import aiohttp

    from popgate.gateway.http.server import start
    from popgate.gateway.ops.config import load_config
    from tests.support.servers import write_config

    tmp = Path(tempfile.mkdtemp())
    cfg = load_config(write_config(tmp, f"http://127.0.0.1:{free_port()}"))
    running = await start(cfg)
    try:
        async with aiohttp.ClientSession() as s:
            try:
                async with s.get(url_of(running, "/"), headers=headers) as r:
                    assert r.status != 500
            except (aiohttp.ClientError, ValueError):
                pass  # the client library itself refused to send it
    finally:
        await running.stop()
