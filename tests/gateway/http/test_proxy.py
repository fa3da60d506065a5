"""Reverse-proxy behaviour over real loopback HTTP: streaming, headers, errors."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import session_token, url_of
from tests.support.servers import free_port, serve_app

ALLOW_ALL = '[policy]\ndefault = "allow"\n'


@pytest.fixture(params=["lean", "aiohttp"])
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_session_request_reaches_upstream_with_pop_headers(
    upstream, gateway_factory, http, client_kind
):
    """A valid session is forwarded and the origin learns class, subject and evidence."""
    gw = await gateway_factory(upstream, server_extra=f'upstream_client = "{client_kind}"')
    token = session_token(gw, "human", subject="human:abc")
    async with http.get(url_of(gw, "/api/x?q=1"), headers={"Authorization": f"PoP {token}"}) as r:
        assert r.status == 200
        info = await r.json()
    assert info["path"] == "/api/x?q=1"
    assert info["pop"] == {"PoP-Class": "human", "PoP-Subject": "human:abc", "PoP-Evidence": "session"}
    assert "Authorization" not in info["headers"], "popgate's own credential must not reach the origin"
    assert r.headers["Via"].endswith("1.1 popgate")


async def test_spoofed_pop_headers_are_stripped(upstream, gateway_factory, http, client_kind):
    """A client cannot tell the origin it is human by sending PoP-* itself."""
    gw = await gateway_factory(upstream, extra=ALLOW_ALL, server_extra=f'upstream_client = "{client_kind}"')
    spoof = {"PoP-Class": "human", "PoP-Subject": "admin", "pop-charged": "0", "PoP-Evidence": "worldid"}
    async with http.get(url_of(gw, "/"), headers=spoof) as r:
        info = await r.json()
    assert info["pop"] == {"PoP-Class": "unknown"}


async def test_session_cookie_accepted_and_not_forwarded(upstream, gateway_factory, http):
    """The session cookie works like the header and is removed from what the origin sees."""
    gw = await gateway_factory(upstream)
    token = session_token(gw, "account")
    cookie = f"a=1; popgate_session={token}; b=2"
    async with http.get(url_of(gw, "/c"), headers={"Cookie": cookie}) as r:
        assert r.status == 200
        info = await r.json()
    assert info["pop"]["PoP-Class"] == "account"
    assert info["headers"]["Cookie"] == "a=1; b=2"


async def test_hop_by_hop_headers_removed_both_ways(gateway_factory, http, client_kind):
    """RFC 9110 §7.6.1: hop-by-hop fields and those named in Connection never cross."""
    seen = {}

    async def origin(request: web.Request) -> web.Response:
        seen.update(request.headers)
        return web.Response(
            text="ok",
            headers={
                "Keep-Alive": "timeout=5",
                "X-Drop-Me": "1",
                "Connection": "X-Drop-Me",
                "X-Kept": "yes",
                "Proxy-Authenticate": "Basic",
            },
        )

    app = web.Application()
    app.router.add_get("/h", origin)
    async with serve_app(app) as port:
        gw = await gateway_factory(
            f"http://127.0.0.1:{port}", extra=ALLOW_ALL, server_extra=f'upstream_client = "{client_kind}"'
        )
        headers = {
            "Connection": "keep-alive, X-Secret-Hop",
            "X-Secret-Hop": "1",
            "Keep-Alive": "300",
            "TE": "trailers",
            "Proxy-Authorization": "Basic Zm9vOmJhcg==",
            "Upgrade": "h2c",
            "Proxy-Connection": "keep-alive",
            "X-Normal": "stays",
        }
        async with http.get(url_of(gw, "/h"), headers=headers) as r:
            assert r.status == 200
            assert r.headers["X-Kept"] == "yes"
            for name in ("X-Drop-Me", "Proxy-Authenticate"):
                assert name not in r.headers
            assert r.headers.get("Keep-Alive") is None
    lowered = {k.lower() for k in seen}
    for name in ("x-secret-hop", "keep-alive", "te", "proxy-authorization", "upgrade", "proxy-connection"):
        assert name not in lowered, name
    assert seen["X-Normal"] == "stays"


async def test_forwarding_headers_untrusted_peer(upstream, gateway_factory, http):
    """From an untrusted peer, a client-sent X-Forwarded-For is replaced, not extended."""
    gw = await gateway_factory(upstream, extra=ALLOW_ALL)
    async with http.get(
        url_of(gw, "/"),
        headers={
            "X-Forwarded-For": "6.6.6.6",
            "Host": "api.example",
            "X-Forwarded-Proto": "https",
            "Via": "1.0 edge",
        },
    ) as r:
        info = await r.json()
    h = info["headers"]
    assert h["X-Forwarded-For"] == "127.0.0.1"
    assert h["X-Forwarded-Proto"] == "http"
    assert h["X-Forwarded-Host"] == "api.example"
    assert h["Via"] == "1.0 edge, 1.1 popgate"


async def test_forwarding_headers_trusted_peer(upstream, gateway_factory, http):
    """Behind a trusted proxy the chain is kept and extended with the peer."""
    gw = await gateway_factory(upstream, extra=ALLOW_ALL, server_extra='trusted_proxies = ["127.0.0.0/8"]')
    async with http.get(
        url_of(gw, "/"), headers={"X-Forwarded-For": "203.0.113.9, 10.1.2.3", "X-Forwarded-Proto": "https"}
    ) as r:
        info = await r.json()
    assert info["headers"]["X-Forwarded-For"] == "203.0.113.9, 10.1.2.3, 127.0.0.1"
    assert info["headers"]["X-Forwarded-Proto"] == "https"


async def test_large_bodies_stream_both_ways(upstream, gateway_factory, http, client_kind):
    """32 MiB up and back through /echo arrive intact."""
    gw = await gateway_factory(
        upstream,
        extra=ALLOW_ALL + "[limits]\nmax_body_bytes = 67108864\n",
        server_extra=f'upstream_client = "{client_kind}"',
    )
    block = hashlib.sha256(b"seed").digest() * 2048  # 64 KiB
    total = 512

    async def body():
        for _i in range(total):
            yield block

    digest = hashlib.sha256()
    received = 0
    async with http.post(url_of(gw, "/echo"), data=body()) as r:
        assert r.status == 200
        async for chunk in r.content.iter_any():
            digest.update(chunk)
            received += len(chunk)
    assert received == total * len(block)
    assert digest.hexdigest() == hashlib.sha256(block * total).hexdigest()


async def test_streaming_is_incremental(upstream, gateway_factory, client_kind):
    """With ``request_buffer = 0`` (full duplex), the echo of the first chunk comes
    back before the client sends the second: nothing is buffered whole."""
    gw = await gateway_factory(
        upstream,
        extra=ALLOW_ALL + "\n[limits]\nrequest_buffer = 0\n",
        server_extra=f'upstream_client = "{client_kind}"',
    )
    port = gw.proxy.addresses[0][1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
    writer.write(b"5\r\nfirst\r\n")
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    assert head.startswith(b"HTTP/1.1 200")
    got = b""
    while b"first" not in got:
        got += await asyncio.wait_for(reader.read(1024), 5)
    writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
    await writer.drain()
    while b"second" not in got:
        got += await asyncio.wait_for(reader.read(1024), 5)
    writer.close()


async def test_large_download_streams(upstream, gateway_factory, http, client_kind):
    """A 24 MiB chunked download and a Content-Length one pass through complete."""
    gw = await gateway_factory(upstream, extra=ALLOW_ALL, server_extra=f'upstream_client = "{client_kind}"')
    for length in ("0", "1"):
        n = 24 * 1024 * 1024
        async with http.get(url_of(gw, f"/stream?size={n}&length={length}")) as r:
            assert r.status == 200
            size = 0
            async for chunk in r.content.iter_any():
                size += len(chunk)
        assert size == n


async def test_upstream_unreachable_is_502(gateway_factory, http, client_kind):
    """A dead origin gives 502 problem+json, never a 500."""
    gw = await gateway_factory(
        f"http://127.0.0.1:{free_port()}", extra=ALLOW_ALL, server_extra=f'upstream_client = "{client_kind}"'
    )
    async with http.get(url_of(gw, "/")) as r:
        assert r.status == 502
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert (await r.json())["reason"] == "upstream_unreachable"


async def test_upstream_read_timeout_is_504(upstream, gateway_factory, http, client_kind):
    """An origin slower than the read timeout gives 504 problem+json."""
    gw = await gateway_factory(
        upstream,
        extra=ALLOW_ALL + "[limits]\nread_timeout = 0.3\n",
        server_extra=f'upstream_client = "{client_kind}"',
    )
    async with http.get(url_of(gw, "/slow?delay=2")) as r:
        assert r.status == 504
        assert (await r.json())["reason"] == "upstream_timeout"
    async with http.get(url_of(gw, "/slow?delay=0.05")) as r:
        assert r.status == 200, "a fast-enough answer still passes after a timeout"


async def test_upstream_connect_timeout_is_504(gateway_factory, http, client_kind):
    """A connect that never completes gives 504 (loopback listener whose backlog is full)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):  # fill the accept queue: later SYNs are dropped, connects hang
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    await asyncio.sleep(0.2)
    try:
        gw = await gateway_factory(
            f"http://127.0.0.1:{port}",
            extra=ALLOW_ALL + "[limits]\nconnect_timeout = 0.3\n",
            server_extra=f'upstream_client = "{client_kind}"',
        )
        async with http.get(url_of(gw, "/")) as r:
            assert r.status == 504
            assert (await r.json())["reason"] == "upstream_timeout"
    finally:
        for s in fillers:
            s.close()
        listener.close()


async def test_upstream_reset_mid_response(gateway_factory, http, client_kind):
    """An origin that dies after the headers cuts the client's body short (no fake success)."""

    async def bad(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Length": "1000000"})
        await resp.prepare(request)
        await resp.write(b"x" * 1000)
        request.transport.close()
        return resp

    app = web.Application()
    app.router.add_get("/bad", bad)
    async with serve_app(app) as port:
        gw = await gateway_factory(
            f"http://127.0.0.1:{port}", extra=ALLOW_ALL, server_extra=f'upstream_client = "{client_kind}"'
        )
        with pytest.raises(aiohttp.ClientPayloadError):
            async with http.get(url_of(gw, "/bad")) as r:
                await r.read()
        async with http.get(url_of(gw, "/bad-route-gives-404")) as r:
            assert r.status == 404, "the gateway keeps serving afterwards"


async def test_header_limits_give_431(upstream, gateway_factory, http):
    """Too many or too large header fields: 431 problem+json."""
    gw = await gateway_factory(
        upstream, extra=ALLOW_ALL + "[limits]\nmax_header_bytes = 4096\nmax_header_count = 20\n"
    )
    async with http.get(url_of(gw, "/"), headers={"X-Big": "a" * 5000}) as r:
        assert r.status == 431
        assert (await r.json())["reason"] == "headers_too_large"
    many = {f"X-H{i}": "v" for i in range(40)}
    async with http.get(url_of(gw, "/"), headers=many) as r:
        assert r.status == 431
    spread = {f"X-S{i}": "b" * 300 for i in range(15)}
    async with http.get(url_of(gw, "/"), headers=spread) as r:
        assert r.status == 431, "total header size counts, not only each line"


async def test_body_limit_gives_413(upstream, gateway_factory, http, client_kind):
    """A declared or streamed body over the limit: 413, and nothing partial is acted upon."""
    gw = await gateway_factory(
        upstream,
        extra=ALLOW_ALL + "[limits]\nmax_body_bytes = 100000\n",
        server_extra=f'upstream_client = "{client_kind}"',
    )
    async with http.post(url_of(gw, "/echo"), data=b"x" * 200000) as r:
        assert r.status == 413

    async def chunks():
        for _ in range(10):
            yield b"y" * 30000

    async with http.post(url_of(gw, "/echo"), data=chunks()) as r:
        assert r.status in (413,)


async def test_websocket_passthrough(upstream, gateway_factory, http):
    """WebSocket upgrades are proxied and messages echo both ways."""
    gw = await gateway_factory(upstream)
    token = session_token(gw)
    async with http.ws_connect(url_of(gw, "/ws"), headers={"Authorization": f"PoP {token}"}) as ws:
        await ws.send_str("hi")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.data == "echo:hi"
        await ws.send_bytes(b"\x00\x01")
        msg = await asyncio.wait_for(ws.receive(), 5)
        assert msg.data == b"\x00\x01"


async def test_websocket_without_evidence_is_challenged(upstream, gateway_factory, http):
    """The upgrade request goes through the pipeline like any other."""
    gw = await gateway_factory(upstream)
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await http.ws_connect(url_of(gw, "/ws"))
    assert exc.value.status == 402


async def test_head_and_no_body_statuses(gateway_factory, http, client_kind):
    """HEAD keeps Content-Length without a body; 204 and 304 pass through."""

    async def h(request: web.Request) -> web.Response:
        code = int(request.query.get("code", "200"))
        if code in (204, 304):
            return web.Response(status=code)
        return web.Response(text="x" * 1234)

    app = web.Application()
    app.router.add_route("*", "/h", h)
    async with serve_app(app) as port:
        gw = await gateway_factory(
            f"http://127.0.0.1:{port}", extra=ALLOW_ALL, server_extra=f'upstream_client = "{client_kind}"'
        )
        async with http.head(url_of(gw, "/h")) as r:
            assert r.status == 200
            assert r.headers["Content-Length"] == "1234"
        for code in (204, 304):
            async with http.get(url_of(gw, f"/h?code={code}")) as r:
                assert r.status == code
        async with http.get(url_of(gw, "/h")) as r:
            assert len(await r.read()) == 1234, "the connection is still usable after HEAD/204/304"


async def test_challenge_is_problem_json_or_html(upstream, gateway_factory, http):
    """Unknown clients get 402: problem+json for APIs, an HTML page (never 200) for browsers."""
    gw = await gateway_factory(upstream)
    async with http.get(url_of(gw, "/")) as r:
        assert r.status == 402
        assert r.headers["Content-Type"].startswith("application/problem+json")
        assert r.headers["Cache-Control"] == "no-store"
        body = await r.json()
        assert body["status"] == 402 and body["type"].startswith("urn:popgate:problem:")
        assert "PoP" in r.headers["WWW-Authenticate"]
    async with http.get(url_of(gw, "/"), headers={"Accept": "text/html,*/*"}) as r:
        assert r.status == 402
        assert r.headers["Content-Type"].startswith("text/html")
        assert "<html" in await r.text()


async def test_origin_cookies_not_shared_between_clients(upstream, gateway_factory, http):
    """The upstream pool keeps no cookie jar: one client's cookies never reach another."""
    gw = await gateway_factory(upstream, extra=ALLOW_ALL, server_extra='upstream_client = "aiohttp"')
    async with http.get(url_of(gw, "/first")) as r:
        assert "origin=1" in r.headers.get("Set-Cookie", "")
    async with http.get(url_of(gw, "/second")) as r:
        info = await r.json()
    assert "Cookie" not in info["headers"]


async def test_popgate_endpoint_session_info(upstream, gateway_factory, http):
    """GET /.well-known/popgate/session describes the presented session."""
    gw = await gateway_factory(upstream)
    token = session_token(gw, "human", subject="human:s1")
    async with http.get(
        url_of(gw, "/.well-known/popgate/session"), headers={"Authorization": f"PoP {token}"}
    ) as r:
        assert r.status == 200
        body = json.loads(await r.text())
    assert body["class"] == "human" and body["subject"] == "human:s1"
    async with http.get(url_of(gw, "/.well-known/popgate/session")) as r:
        assert r.status == 401
    async with http.get(url_of(gw, "/.well-known/popgate/nope")) as r:
        assert r.status == 404


async def test_popgate_evidence_headers_not_forwarded(upstream, gateway_factory, http):
    """Stamps and popgate credentials (PoP, PoP-Puzzle) never reach the origin."""
    gw = await gateway_factory(upstream, extra=ALLOW_ALL)
    for headers in (
        {"X-Hashcash": "1:20:260101:x::abc:1"},
        {"Authorization": "PoP-Puzzle pz1.k.x.y:1"},
        {"Authorization": "pop v1.k1.x.y"},
    ):
        async with http.get(url_of(gw, "/"), headers=headers) as r:
            info = await r.json()
        sent = {k.lower() for k in info["headers"]}
        assert "x-hashcash" not in sent and "authorization" not in sent, headers
    async with http.get(url_of(gw, "/"), headers={"Authorization": "Bearer origin-token"}) as r:
        info = await r.json()
    assert info["headers"]["Authorization"] == "Bearer origin-token", "the origin's own auth passes"
