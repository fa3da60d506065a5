"""A local Ethereum JSON-RPC endpoint that plays a World ID identity manager.

It answers ``eth_call`` for ``latestRoot()``, ``rootHistory(uint256)`` and
``rootHistoryExpiry()`` (selectors from keccak, as a real node would match
them) from :class:`ChainState`, and counts the calls it served.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from popgate.gateway.schemes.worldid_roots import LATEST_ROOT, ROOT_HISTORY, ROOT_HISTORY_EXPIRY


@dataclass
class ChainState:
    contract: str
    latest: int = 0
    history: dict[int, int] = field(default_factory=dict)  # root -> timestamp
    expiry: int = 3600
    calls: dict[str, int] = field(default_factory=dict)


def _word(n: int) -> str:
    return "0x" + f"{n:064x}"


def make_app(state: ChainState) -> web.Application:
    async def rpc(request: web.Request) -> web.Response:
        req: Any = await request.json()
        rid = req.get("id")
        if req.get("method") != "eth_call":
            return web.json_response(
                {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "method not found"}}
            )
        call = req["params"][0]
        if call.get("to", "").lower() != state.contract.lower():
            return web.json_response({"jsonrpc": "2.0", "id": rid, "result": "0x"})
        data = call.get("data", "")
        sel = data[:10]
        state.calls[sel] = state.calls.get(sel, 0) + 1
        if sel == LATEST_ROOT:
            result = _word(state.latest)
        elif sel == ROOT_HISTORY_EXPIRY:
            result = _word(state.expiry)
        elif sel == ROOT_HISTORY and len(data) == 10 + 64:
            result = _word(state.history.get(int(data[10:], 16), 0))
        else:
            return web.json_response(
                {"jsonrpc": "2.0", "id": rid, "error": {"code": 3, "message": "execution reverted"}}
            )
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})

    app = web.Application()
    app.router.add_post("/", rpc)
    return app
