"""Chain facts for local World ID 4.0 verification (a :class:`verifiers.worldid_v4.Chain`).

- :class:`StaticChain` (``source = "static"``): the config's own lists;
- :class:`FileChain`: a JSON file (``chain_from_json`` format), re-read when
  its mtime changes, at most once per ``poll_interval``;
- :class:`RpcChain`: World Chain JSON-RPC ``eth_call``, starting from the
  ``WorldIDVerifier`` proxy: ``getWorldIDRegistry()``,
  ``getCredentialSchemaIssuerRegistry()``, ``getOprfKeyRegistry()``,
  ``getTreeDepth()``; then ``WorldIDRegistry.getLatestRoot()`` (always valid),
  ``getRootValidityWindow()`` and ``getRootTimestamp(uint256)`` (an older root
  is valid while ``now <= recordedAt + window``, as ``isValidRoot``),
  ``issuerSchemaIdToPubkey(uint64)`` and ``getOprfPublicKey(uint160)``.

Bounded staleness, like the v3 roots: the registry state refreshes at most
once per interval (single flight); a key lookup is cached for one interval and
refreshed by one request at a time; a failed refresh keeps the last answer for
up to ten intervals, after which (and for anything never fetched) the source
fails closed with Overloaded ``chain_unavailable`` (503 + Retry-After). A
revert or an all-zero key means "not registered" (``unknown_issuer`` /
``unknown_rp``, 401). Lookups of roots and issuer schema ids not seen before
share a budget of 16 per interval (then: an unknown root is refused, an unknown
schema id gets 503), so random values cannot make the gateway flood the chain.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from popgate.gateway.errors import Overloaded
from popgate.gateway.schemes.worldid_roots import Call, Reverted, _Refreshing, selector
from popgate.verifiers.worldid_v4 import StaticChain, chain_from_json

log = logging.getLogger("popgate.worldid.chain")
SEL = {
    name: selector(name)
    for name in (
        "getWorldIDRegistry()", "getCredentialSchemaIssuerRegistry()", "getOprfKeyRegistry()",
        "getTreeDepth()", "getLatestRoot()", "getRootValidityWindow()", "getRootTimestamp(uint256)",
        "issuerSchemaIdToPubkey(uint64)", "getOprfPublicKey(uint160)",
    )
}  # fmt: skip
STALE_INTERVALS = 10


def words(hex_result: str, n: int) -> list[int]:
    """The first ``n`` 32-byte words of an ABI-encoded result; RuntimeError when short."""
    raw = hex_result[2:]
    if len(raw) < 64 * n:
        raise RuntimeError(f"eth_call: {len(raw) // 2} bytes, expected {32 * n}")
    return [int(raw[64 * i : 64 * i + 64], 16) for i in range(n)]


class FileChain(_Refreshing):
    """Chain facts from a JSON file, re-read when its mtime (or size) changes."""

    unavailable = "chain_unavailable"

    def __init__(self, path: str, interval: float) -> None:
        super().__init__(interval)
        self.path, self.stamp = path, (0, -1)
        self.facts = StaticChain(frozenset(), {}, {})

    async def _load(self, now: float) -> None:
        st = os.stat(self.path)
        if (st.st_mtime_ns, st.st_size) != self.stamp:
            with open(self.path, encoding="utf-8") as f:  # noqa: ASYNC230 (small local file, on change only)
                self.facts = chain_from_json(json.loads(f.read(4 * 1024 * 1024)))
            self.stamp = (st.st_mtime_ns, st.st_size)

    async def _ready(self, now: float) -> StaticChain:
        await self.fresh(now)
        return self.facts

    async def root_valid(self, root: int, now: float) -> bool:
        return await (await self._ready(now)).root_valid(root, now)

    async def issuer_key(self, schema_id: int, now: float) -> tuple[int, int] | None:
        return await (await self._ready(now)).issuer_key(schema_id, now)

    async def oprf_key(self, rp_id: int, now: float) -> tuple[int, int] | None:
        return await (await self._ready(now)).oprf_key(rp_id, now)

    async def tree_depth(self, now: float) -> int:
        return await (await self._ready(now)).tree_depth(now)


class _Lookups:
    """key -> (value, fetched_at): one fetch per key at a time, refetched after ``interval``,
    served stale up to STALE_INTERVALS when a refetch fails."""

    def __init__(self, interval: float, limit: int = 4096) -> None:
        self.interval, self.limit = interval, limit
        self.cache: OrderedDict[Any, tuple[Any, float]] = OrderedDict()
        self.flights: dict[Any, asyncio.Task[Any]] = {}

    async def get(self, k: Any, now: float, fetch: Callable[[], Awaitable[Any]]) -> Any:
        hit = self.cache.get(k)
        if hit is not None and now - hit[1] < self.interval:
            return hit[0]
        task = self.flights.get(k)
        if task is None or task.done():
            task = self.flights[k] = asyncio.ensure_future(fetch())
        try:
            value = await asyncio.shield(task)
        except Reverted:
            value = None
        except Exception as exc:
            log.warning("chain lookup failed: %s: %s", type(exc).__name__, exc)
            if hit is not None and now - hit[1] <= STALE_INTERVALS * self.interval:
                return hit[0]
            raise Overloaded(
                "chain lookup failed", reason="chain_unavailable", retry_after=self.interval
            ) from None
        finally:
            self.flights.pop(k, None)
        self.cache[k] = (value, now)
        self.cache.move_to_end(k)
        while len(self.cache) > self.limit:
            self.cache.popitem(last=False)
        return value


class RpcChain(_Refreshing):
    """Chain facts over JSON-RPC from the WorldIDVerifier at ``verifier`` (module doc)."""

    ROOT_LOOKUPS_PER_INTERVAL = 16
    unavailable = "chain_unavailable"

    def __init__(self, call: Call, verifier: str, interval: float) -> None:
        super().__init__(interval)
        self.call, self.verifier = call, verifier
        self.registry = self.issuers = self.oprf = ""
        self.depth, self.latest, self.window = 0, -1, 0
        self.keys = _Lookups(interval)
        self.stamps: OrderedDict[int, int] = OrderedDict()  # root -> recordedAt (never changes)
        self.unknown: OrderedDict[int, float] = OrderedDict()
        self.lookups = 0

    async def _word(self, to: str, name: str, arg: int | None = None) -> int:
        data = SEL[name] + ("" if arg is None else f"{arg:064x}")
        return words(await self.call(to, data), 1)[0]

    async def _address(self, name: str) -> str:
        return f"0x{await self._word(self.verifier, name) & (2**160 - 1):040x}"

    async def _load(self, now: float) -> None:
        # re-read each interval: the verifier's owner can point it at new registries
        self.registry = await self._address("getWorldIDRegistry()")
        self.issuers = await self._address("getCredentialSchemaIssuerRegistry()")
        self.oprf = await self._address("getOprfKeyRegistry()")
        self.depth = await self._word(self.verifier, "getTreeDepth()")
        self.window = await self._word(self.registry, "getRootValidityWindow()")
        self.latest = await self._word(self.registry, "getLatestRoot()")
        self.lookups = 0

    async def root_valid(self, root: int, now: float) -> bool:
        await self.fresh(now)
        if root == self.latest:
            return True
        stamp = self.stamps.get(root)
        if stamp is None:
            asked = self.unknown.get(root)
            if (
                asked is not None and now - asked < self.interval
            ) or self.lookups >= self.ROOT_LOOKUPS_PER_INTERVAL:
                return False
            self.lookups += 1
            got = await self.keys.get(
                ("root", root), now, lambda: self._word(self.registry, "getRootTimestamp(uint256)", root)
            )
            if not got:
                _remember(self.unknown, root, now)
                return False
            stamp = int(got)
            _remember(self.stamps, root, stamp)
        return now <= stamp + self.window

    async def _pair(self, to: str, name: str, arg: int) -> tuple[int, int] | None:
        x, y = words(await self.call(to, SEL[name] + f"{arg:064x}"), 2)
        return (x, y) if x and y else None

    async def issuer_key(self, schema_id: int, now: float) -> tuple[int, int] | None:
        await self.fresh(now)

        async def fetch() -> tuple[int, int] | None:
            # a schema id not looked up this interval costs an eth_call: at most 16 per interval
            # (shared with roots), then 503 unless an older answer is at hand
            if self.lookups >= self.ROOT_LOOKUPS_PER_INTERVAL:
                raise RuntimeError("chain lookup budget used for this interval")
            self.lookups += 1
            return await self._pair(self.issuers, "issuerSchemaIdToPubkey(uint64)", schema_id)

        pair: tuple[int, int] | None = await self.keys.get(("issuer", schema_id), now, fetch)
        return pair

    async def oprf_key(self, rp_id: int, now: float) -> tuple[int, int] | None:
        await self.fresh(now)
        pair: tuple[int, int] | None = await self.keys.get(
            ("oprf", rp_id), now, lambda: self._pair(self.oprf, "getOprfPublicKey(uint160)", rp_id)
        )
        return pair

    async def tree_depth(self, now: float) -> int:
        await self.fresh(now)
        return self.depth


def _remember(cache: OrderedDict[int, Any], k: int, value: Any, limit: int = 4096) -> None:
    cache[k] = value
    cache.move_to_end(k)
    while len(cache) > limit:
        cache.popitem(last=False)
