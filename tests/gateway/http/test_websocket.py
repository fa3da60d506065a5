"""The WebSocket path through a real gateway and a real WebSocket origin started here:
popgate's credentials are stripped by the same table as on HTTP, a successful
upgrade is a billed request (a failed one is refunded), and a bad handshake is a
400 before any charge or upstream socket."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp import web

from popgate.gateway.cli.demo_upstream import describe
from tests.conftest import admin_url, session_token, url_of
from tests.gateway.http.raw import exchange, request_bytes
from tests.support.paid_gateway import ChargePolicy
from tests.support.servers import serve_app

TOKEN = "t" * 40
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
KEY = "pgk_" + "0" * 16 + "_" + "A" * 43  # popgate's API key format (unknown key: never checked here)


@pytest.fixture
async def origin():
    """HTTP: the demo's request echo. WebSocket on ``/ws`` and ``/paid/ws``: the first
    message says what the origin received. ``seen`` counts every request it got."""
    seen: list[str] = []

    async def ws(request: web.Request) -> web.WebSocketResponse:
        seen.append(request.raw_path)
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        await sock.send_str(json.dumps({"target": request.raw_path, "headers": dict(request.headers)}))
        async for msg in sock:
            if msg.type == aiohttp.WSMsgType.TEXT:
                await sock.send_str("echo:" + msg.data)
        return sock

    async def http(request: web.Request) -> web.StreamResponse:
        seen.append(request.raw_path)
        return await describe(request)

    app = web.Application()
    app.router.add_get("/ws", ws)
    app.router.add_get("/paid/ws", ws)
    app.router.add_route("*", "/{tail:.*}", http)
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}", seen


def paid_tables(tmp_path) -> str:
    (tmp_path / "admin").write_text(TOKEN)
    return f"""
[policy]
default = "allow"
[credits]
admin_token = {{ secret_file = "{tmp_path / "admin"}" }}
[x402]
networks = ["eip155:84532"]
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
facilitator = "http://127.0.0.1:9"
accept_v1 = true
"""


CREDENTIALS = {
    "session": ("Authorization", "PoP v1.k1.payload.mac"),
    "puzzle-authorization": ("Authorization", "PoP-Puzzle pz1.p1.x.y:1"),
    "api-key": ("Authorization", f"Bearer {KEY}"),
    "hashcash": ("X-Hashcash", "1:20:260101:x/r::abc:1"),
    "puzzle-header": ("PoP-Puzzle", "pz1.p1.x.y:1"),
    "x402": ("PAYMENT-SIGNATURE", "eyJ4NDAyVmVyc2lvbiI6Mn0="),
    "x402-v1": ("X-PAYMENT", "eyJ4NDAyVmVyc2lvbiI6MX0="),
}


@pytest.mark.parametrize("kind", sorted(CREDENTIALS))
async def test_credentials_never_reach_the_origin_on_either_path(
    origin, gateway_factory, http, tmp_path, kind
):
    """Each kind of popgate credential is stripped on plain HTTP and on a WebSocket upgrade."""
    up, _seen = origin
    gw = await gateway_factory(up, extra=paid_tables(tmp_path))
    name, value = CREDENTIALS[kind]
    headers = {name: value, "X-Origin-Own": "kept"}
    async with http.get(url_of(gw, "/plain"), headers=headers) as r:
        assert r.status == 200
        got = {k.lower(): v for k, v in (await r.json())["headers"].items()}
    assert name.lower() not in got, f"{kind} reached the origin over HTTP"
    assert got["x-origin-own"] == "kept"
    async with http.ws_connect(url_of(gw, "/ws"), headers=headers) as ws:
        first = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
    got = {k.lower(): v for k, v in first["headers"].items()}
    assert name.lower() not in got, f"{kind} reached the origin over WebSocket"
    assert got["x-origin-own"] == "kept"
    assert got["pop-class"] == "unknown" and got["x-forwarded-host"].startswith("127.0.0.1")


async def test_session_cookie_stripped_on_both_paths(origin, gateway_factory, http):
    up, _seen = origin
    gw = await gateway_factory(up)
    token = session_token(gw, "human")
    cookie = {"Cookie": f"a=1; popgate_session={token}; b=2"}
    async with http.get(url_of(gw, "/plain"), headers=cookie) as r:
        assert (await r.json())["headers"]["Cookie"] == "a=1; b=2"
    async with http.ws_connect(url_of(gw, "/ws?x=1"), headers=cookie) as ws:
        first = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
    assert first["headers"]["Cookie"] == "a=1; b=2"
    assert first["headers"]["PoP-Class"] == "human", "the cookie's session still counted"
    assert first["target"] == "/ws?x=1"


async def test_a_websocket_on_a_charged_route_is_billed(origin, gateway_factory, http, tmp_path):
    """An upgrade that went through (101) keeps its debit; one the origin refused is refunded."""
    up, _seen = origin
    gw = await gateway_factory(up, extra=paid_tables(tmp_path))
    gw.gateway.policy.policy = ChargePolicy(10_000)
    async with http.post(admin_url(gw, "/admin/credits/keys"), json={"amount": 25_000}, headers=ADMIN) as r:
        created = await r.json()
    auth = {"Authorization": f"Bearer {created['api_key']}"}
    async with http.ws_connect(url_of(gw, "/paid/ws"), headers=auth) as ws:
        first = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
        assert first["headers"]["PoP-Charged"] == "10000"
        assert "Authorization" not in first["headers"]
        await ws.send_str("hi")
        assert (await asyncio.wait_for(ws.receive(), 5)).data == "echo:hi"
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await http.ws_connect(url_of(gw, "/paid/plain"), headers=auth)  # the origin answers 200, no upgrade
    assert exc.value.status == 502
    await asyncio.sleep(0.3)  # refunds run after the response
    account = created["account"]
    async with http.get(admin_url(gw, f"/admin/credits/accounts/{account}/ledger"), headers=ADMIN) as r:
        kinds = [e["kind"] for e in (await r.json())["entries"]]
    assert kinds == ["topup", "debit", "debit", "refund"], "a served WebSocket is billed, a failed one not"
    assert await gw.gateway.services.store.balance(account) == 15_000


BAD_HANDSHAKES = {
    "no key": [("Upgrade", "websocket"), ("Connection", "Upgrade"), ("Sec-WebSocket-Version", "13")],
    "short key": [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "c2hvcnQ="),
    ],
    "bad version": [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "12"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ],
    "no connection upgrade": [
        ("Upgrade", "websocket"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ],
}


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("case", sorted(BAD_HANDSHAKES))
async def test_bad_handshake_is_400_before_any_upstream_work(origin, gateway_factory, tmp_path, case, method):
    up, seen = origin
    gw = await gateway_factory(up)
    port = gw.proxy.addresses[0][1]
    headers = [("Host", "h"), ("Authorization", f"PoP {session_token(gw)}"), *BAD_HANDSHAKES[case]]
    if method == "POST":
        headers.append(("Content-Length", "0"))
    r = await exchange(port, request_bytes(f"{method} /ws HTTP/1.1", headers))
    assert r.status == 400, r.body
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["reason"] == "bad_websocket_handshake"
    assert seen == [], "no upstream socket for a bad handshake"


async def test_post_with_a_valid_looking_handshake_is_400(origin, gateway_factory):
    up, seen = origin
    gw = await gateway_factory(up)
    port = gw.proxy.addresses[0][1]
    headers = [
        ("Host", "h"),
        ("Authorization", f"PoP {session_token(gw)}"),
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Content-Length", "0"),
    ]
    r = await exchange(port, request_bytes("POST /ws HTTP/1.1", headers))
    assert r.status == 400 and r.json()["reason"] == "bad_websocket_handshake"
    assert seen == []


async def test_bad_handshake_on_a_charged_route_is_not_billed(origin, gateway_factory, http, tmp_path):
    up, seen = origin
    gw = await gateway_factory(up, extra=paid_tables(tmp_path))
    gw.gateway.policy.policy = ChargePolicy(10_000)
    async with http.post(admin_url(gw, "/admin/credits/keys"), json={"amount": 25_000}, headers=ADMIN) as r:
        created = await r.json()
    headers = [("Host", "h"), ("Authorization", f"Bearer {created['api_key']}"), *BAD_HANDSHAKES["no key"]]
    r = await exchange(gw.proxy.addresses[0][1], request_bytes("GET /paid/ws HTTP/1.1", headers))
    assert r.status == 400
    await asyncio.sleep(0.2)
    async with http.get(
        admin_url(gw, f"/admin/credits/accounts/{created['account']}/ledger"), headers=ADMIN
    ) as resp:
        assert [e["kind"] for e in (await resp.json())["entries"]] == ["topup"]
    assert seen == []
