"""Endpoint bodies arrive whole however the client's writes are split, and a body that never
finishes is a 408, not a hang: puzzle, World ID and zkLogin exchanges over a raw socket that
sends the request in pieces with pauses between them."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import pytest

from popgate.gateway import client
from popgate.gateway.http import bodies
from tests.conftest import url_of
from tests.gateway.schemes.puzzle_support import puzzle_extra, way
from tests.gateway.schemes.test_zklogin import ENDPOINT as ZKLOGIN
from tests.gateway.schemes.test_zklogin import Client as ZkClient
from tests.gateway.schemes.test_zklogin import zk_config
from tests.gateway.schemes.worldid_support import ENDPOINT as WORLDID
from tests.gateway.schemes.worldid_support import body, worldid_toml

UA = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0", "Accept": "application/json"}


async def send_in_pieces(
    port: int,
    path: str,
    payload: bytes,
    rng: random.Random,
    *,
    pause: float = 0.15,
    stop_after: int | None = None,
) -> tuple[int, dict[str, Any]]:
    """POST ``payload`` to ``path``: the head, then the body in 2-6 random pieces, each after
    ``pause`` seconds (separate TCP segments). ``stop_after``: send only that many body bytes
    and keep the connection open (a client that stalls). Returns (status, JSON body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        f"User-Agent: {UA['User-Agent']}\r\nAccept: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    writer.write(head)
    await writer.drain()
    body = payload if stop_after is None else payload[:stop_after]
    cuts = sorted(rng.sample(range(1, len(body)), min(len(body) - 1, rng.randint(1, 5))))
    for start, end in zip([0, *cuts], [*cuts, len(body)]):
        await asyncio.sleep(pause)
        writer.write(body[start:end])
        await writer.drain()
    head_bytes = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=30)
    status = int(head_bytes.split(b" ", 2)[1])
    length = next(
        int(line.split(b":", 1)[1])
        for line in head_bytes.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    rest = await asyncio.wait_for(reader.readexactly(length), timeout=30)
    writer.close()
    return status, json.loads(rest or b"{}")


def port_of(gw: Any) -> int:
    return int(gw.proxy.addresses[0][1])


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_worldid_proof_in_pieces_buys_a_session(upstream, gateway_factory, seed):
    """A real World ID proof sent in several segments 0.15 s apart gets its session (was: 400)."""
    gw = await gateway_factory(upstream, extra=worldid_toml())
    payload = json.dumps(body(0)).encode()
    status, data = await send_in_pieces(port_of(gw), WORLDID, payload, random.Random(seed))
    assert status == 200, data
    assert data["class"] == "human"


async def test_puzzle_solution_in_pieces_buys_a_session(upstream, gateway_factory, http, tmp_path):
    """A puzzle solution posted in pieces is accepted like one sent whole."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    async with http.get(url_of(gw, "/api/x"), headers=UA) as r:
        pz = way(await r.json(), "puzzle")
    solved = client.solve_puzzle(pz)
    payload = json.dumps({"solution": solved.headers["PoP-Puzzle"], "return_to": "/api/x"}).encode()
    status, data = await send_in_pieces(port_of(gw), pz["submit"], payload, random.Random(7))
    assert status == 200, data
    assert data["token_type"] == "PoP"


async def test_zklogin_exchange_in_pieces_buys_a_session(upstream, gateway_factory, jwks_server):
    """A valid zkLogin exchange (a real RS256 id_token from the test's JWKS) sent in pieces gets
    its account session."""
    gw = await gateway_factory(upstream, extra=zk_config(jwks_server.url))
    payload = json.dumps(ZkClient().exchange_body()).encode()
    status, data = await send_in_pieces(port_of(gw), ZKLOGIN, payload, random.Random(5))
    assert status == 200, data
    assert data["class"] == "account"


async def test_body_that_never_finishes_is_408(upstream, gateway_factory, monkeypatch):
    """A client that declares a body and stops sending half-way gets 408 body_timeout within the
    endpoint's deadline; the gateway is not held."""
    monkeypatch.setattr(bodies, "BODY_DEADLINE", 0.5)
    gw = await gateway_factory(upstream, extra=worldid_toml())
    payload = json.dumps(body(0)).encode()
    loop = asyncio.get_running_loop()
    started = loop.time()  # the answer comes at the deadline, not when the socket closes
    status, data = await send_in_pieces(
        port_of(gw), WORLDID, payload, random.Random(1), pause=0.05, stop_after=len(payload) // 2
    )
    assert (status, data["reason"]) == (408, "body_timeout")
    assert loop.time() - started < 5
