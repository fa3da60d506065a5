"""A local JSON-RPC stand-in for the World ID 4.0 contracts on World Chain.

Not a node with the contracts deployed (no EVM here): it answers ``eth_call``
with the ABI-encoded values the contracts return, matched by address and by
selector (keccak of the signature, as a node matches them):

- ``WorldIDVerifier`` (``verifier``): ``getWorldIDRegistry()``,
  ``getCredentialSchemaIssuerRegistry()``, ``getOprfKeyRegistry()`` (addresses
  as a word), ``getTreeDepth()``;
- ``WorldIDRegistry``: ``getLatestRoot()``, ``getRootValidityWindow()``,
  ``getRootTimestamp(uint256)`` (0 for a root it never recorded);
- ``CredentialSchemaIssuerRegistry.issuerSchemaIdToPubkey(uint64)`` → the
  ``Pubkey`` struct (two words; zeros when unregistered, as the mapping returns);
- ``OprfKeyRegistry.getOprfPublicKey(uint160)`` → ``Affine`` (two words),
  reverting for an unknown key id.

``calls`` counts the calls per selector; ``down = True`` makes every call fail
(HTTP 502) to show fail-closed behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from popgate.gateway.schemes.worldid_chain import SEL

VERIFIER = "0x00000000009e00f9fe82cfeebb4556686da094d7"
REGISTRY = "0x0000000000ae079eb8a274cd51c0f44a9e4d67d4"
ISSUERS = "0x941239840f4d9668da8be76b568e836b50685d2c"
OPRF = "0x00000000000000000000000000000000000a0bf0"


@dataclass
class V4ChainState:
    latest: int = 0
    stamps: dict[int, int] = field(default_factory=dict)  # root -> recordedAt
    window: int = 3600
    depth: int = 30
    issuer_keys: dict[int, tuple[int, int]] = field(default_factory=dict)
    oprf_keys: dict[int, tuple[int, int]] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict)
    down: bool = False


def _words(*values: int) -> str:
    return "0x" + "".join(f"{v:064x}" for v in values)


def _answer(state: V4ChainState, to: str, sel: str, arg: int) -> str | None:
    """The ABI-encoded result, or None for a revert."""
    table: dict[tuple[str, str], Any] = {
        (VERIFIER, SEL["getWorldIDRegistry()"]): lambda: _words(int(REGISTRY, 16)),
        (VERIFIER, SEL["getCredentialSchemaIssuerRegistry()"]): lambda: _words(int(ISSUERS, 16)),
        (VERIFIER, SEL["getOprfKeyRegistry()"]): lambda: _words(int(OPRF, 16)),
        (VERIFIER, SEL["getTreeDepth()"]): lambda: _words(state.depth),
        (REGISTRY, SEL["getLatestRoot()"]): lambda: _words(state.latest),
        (REGISTRY, SEL["getRootValidityWindow()"]): lambda: _words(state.window),
        (REGISTRY, SEL["getRootTimestamp(uint256)"]): lambda: _words(state.stamps.get(arg, 0)),
        (ISSUERS, SEL["issuerSchemaIdToPubkey(uint64)"]): lambda: _words(*state.issuer_keys.get(arg, (0, 0))),
        (OPRF, SEL["getOprfPublicKey(uint160)"]): lambda: (
            _words(*state.oprf_keys[arg]) if arg in state.oprf_keys else None
        ),
    }
    fn = table.get((to, sel))
    return None if fn is None else fn()


def make_app(state: V4ChainState) -> web.Application:
    async def rpc(request: web.Request) -> web.Response:
        if state.down:
            return web.Response(status=502, text="bad gateway")
        req: Any = await request.json()
        rid = req.get("id")
        if req.get("method") != "eth_call":
            return web.json_response(
                {"jsonrpc": "2.0", "id": rid, "error": {"code": -32601, "message": "nope"}}
            )
        call = req["params"][0]
        data, to = call.get("data", ""), call.get("to", "").lower()
        sel = data[:10]
        state.calls[sel] = state.calls.get(sel, 0) + 1
        arg = int(data[10:74], 16) if len(data) >= 74 else 0
        result = _answer(state, to, sel, arg)
        if result is None:
            err = {"code": 3, "message": "execution reverted", "data": "0x"}
            return web.json_response({"jsonrpc": "2.0", "id": rid, "error": err})
        return web.json_response({"jsonrpc": "2.0", "id": rid, "result": result})

    app = web.Application()
    app.router.add_post("/", rpc)
    return app
