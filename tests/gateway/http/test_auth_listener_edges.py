"""WebSocket clients behind the shipped edge configs, the edge asking popgate's lean
forward-auth listener: a session holder's handshake reaches the origin (the auth call may
carry the client's Upgrade headers), an anonymous one gets popgate's 402."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import session_token
from tests.support.edges import UA, caddy, nginx, popgate_pair
from tests.support.servers import free_port

EDGES = {"nginx": nginx, "caddy": caddy}


@pytest.fixture(params=sorted(EDGES))
async def edge(request, tmp_path: Path, upstream: str, gateway_factory) -> AsyncIterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    name = request.param
    if shutil.which(name) is None:
        pytest.fail(f"{name} not installed: `make system-deps` installs it")
    pair = await popgate_pair(tmp_path, upstream, gateway_factory)
    listen = free_port()
    origin = int(upstream.rsplit(":", 1)[1])
    with EDGES[name](tmp_path, listen, pair.auth_port, origin, auth=pair.listener_port):
        yield f"http://127.0.0.1:{listen}", pair.auth


async def test_websocket_session_holder_reaches_the_origin(edge, http):
    base, auth = edge
    token = session_token(auth, "human", subject="human:ws")
    headers = {**UA, "Authorization": f"PoP {token}"}
    async with http.ws_connect(
        base + "/ws", headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=5)
    ) as ws:
        await ws.send_str("hi")
        assert (await ws.receive(timeout=5)).data == "echo:hi"


async def test_websocket_without_evidence_gets_402(edge, http):
    base, _ = edge
    with pytest.raises(aiohttp.WSServerHandshakeError) as err:
        async with http.ws_connect(base + "/ws", headers=UA):
            pass
    assert err.value.status == 402
