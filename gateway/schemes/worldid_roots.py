"""Where valid World ID Merkle roots come from; checked before any pairing.

Every source answers ``await source.is_valid(root, now)`` from memory, and
refreshes at most once per ``poll_interval`` (one refresh at a time; a
failed refresh keeps the last good set for up to ten intervals, then the
source fails closed with :class:`~gateway.errors.Overloaded` ``roots_unavailable``):

- :class:`StaticRoots`: a fixed list from the config;
- :class:`FileRoots`: a file of roots (hex or decimal, one per line, ``#``
  comments), re-read when its mtime changes;
- :class:`RedisSetRoots`: the members of a Redis set (``SMEMBERS``) on the store's server;
- :class:`RpcRoots`: Ethereum JSON-RPC ``eth_call`` on the identity manager
  or a state bridge: ``latestRoot()`` (always valid), ``rootHistory(uint256)
  → uint128`` (when an older root was superseded/received: valid while
  ``now <= t + expiry``) and ``rootHistoryExpiry()`` (the window, unless
  configured). Lookups are cached (a superseded root for good, a root the
  chain does not know for one interval: it may be a root newer than the
  last ``latestRoot``) and limited to 16 per interval, so random roots cost
  the chain nothing. A lookup the chain does not answer is
  ``roots_unavailable`` (503, retry), not ``unknown_root``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import aiohttp
from Crypto.Hash import keccak

from popgate.gateway.errors import Overloaded
from popgate.verifiers.bn254.encoding import parse_uint
from popgate.verifiers.errors import VerificationError

log = logging.getLogger("popgate.roots")


def selector(signature: str) -> str:
    """The 4-byte function selector of a Solidity signature, as 0x + 8 hex."""
    return "0x" + keccak.new(data=signature.encode(), digest_bits=256).hexdigest()[:8]


LATEST_ROOT = selector("latestRoot()")
ROOT_HISTORY = selector("rootHistory(uint256)")
ROOT_HISTORY_EXPIRY = selector("rootHistoryExpiry()")


def parse_roots(text: str) -> frozenset[int]:
    """Roots from text: one per line, hex (0x) or decimal, ``#`` comments. Bad lines are skipped."""
    out = set()
    for line in text.splitlines():
        item = line.split("#", 1)[0].strip()
        if item:
            try:
                out.add(parse_uint(item, "root"))
            except VerificationError:
                log.warning("roots: skipping an unparsable line")
    return frozenset(out)


class RootSource(Protocol):
    async def is_valid(self, root: int, now: float) -> bool: ...

    def age(self, root: int, now: float) -> float:
        """Seconds since a valid ``root`` stopped being the latest (0 when the source keeps no history)."""
        ...


class StaticRoots:
    """A fixed set of roots."""

    def __init__(self, roots: frozenset[int]) -> None:
        self.roots = roots

    async def is_valid(self, root: int, now: float) -> bool:
        return root in self.roots

    def age(self, root: int, now: float) -> float:
        return 0.0


class _Refreshing:
    """A set of roots refreshed at most once per ``interval`` (single-flight)."""

    unavailable = "roots_unavailable"  # the Overloaded reason when no recent good data exists

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.roots: frozenset[int] = frozenset()
        self.fetched = -1e18  # when the last successful refresh happened
        self.tried = -1e18  # when the last attempt happened
        self._flight: asyncio.Task[None] | None = None

    async def _load(self, now: float) -> None:
        raise NotImplementedError

    async def fresh(self, now: float) -> None:
        """Refresh when stale; raise Overloaded when no recent good data exists."""
        idle = self._flight is None or self._flight.done()
        if idle and now - self.tried >= self.interval:
            self.tried = now
            self._flight = asyncio.ensure_future(self._attempt(now))
        if self._flight is not None and not self._flight.done():
            # every caller waits for a refresh in flight (not only the one that started it:
            # concurrent first requests were refused as if no data could be had)
            await asyncio.shield(self._flight)
        if now - self.fetched > 10 * self.interval:
            raise Overloaded("no fresh data", reason=self.unavailable, retry_after=self.interval)

    async def _attempt(self, now: float) -> None:
        try:
            await self._load(now)
            self.fetched = now
        except Exception as exc:
            log.warning("roots refresh failed: %s: %s", type(exc).__name__, exc)

    async def is_valid(self, root: int, now: float) -> bool:
        await self.fresh(now)
        return root in self.roots

    def age(self, root: int, now: float) -> float:
        return 0.0


class FileRoots(_Refreshing):
    """Roots from a file, re-read when its mtime (or size) changes."""

    def __init__(self, path: str, interval: float) -> None:
        super().__init__(interval)
        self.path, self.stamp = path, (0, -1)

    async def _load(self, now: float) -> None:
        st = os.stat(self.path)
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self.stamp:
            # A small local file, read again only when it changed (as cheap as the stat above).
            with open(self.path, encoding="utf-8") as f:  # noqa: ASYNC230
                self.roots = parse_roots(f.read(4 * 1024 * 1024))
            self.stamp = stamp


class RedisSetRoots(_Refreshing):
    """Roots in a Redis set (hex or decimal members), read with SMEMBERS."""

    def __init__(self, client: Any, name: str, interval: float) -> None:
        super().__init__(interval)
        self.client, self.name = client, name

    async def _load(self, now: float) -> None:
        members = await asyncio.wait_for(self.client.smembers(self.name), timeout=5)
        text = "\n".join(m.decode() if isinstance(m, bytes) else str(m) for m in members)
        self.roots = parse_roots(text)


class Reverted(Exception):
    """The call reverted (the contract's definitive \"no\")."""


Call = Callable[[str, str], Awaitable[str]]


class RpcRoots(_Refreshing):
    """Roots from the identity manager (or a bridge) over JSON-RPC ``eth_call``."""

    LOOKUPS_PER_INTERVAL = 16

    def __init__(self, call: Call, contract: str, interval: float, expiry: float | None = None) -> None:
        super().__init__(interval)
        self.call, self.contract, self.expiry = call, contract, expiry
        self.latest: int | None = None
        self.superseded: OrderedDict[int, float] = OrderedDict()  # root -> time it stopped being latest
        self.unknown: OrderedDict[int, float] = OrderedDict()  # root -> when the chain said "never"
        self.lookups = 0

    async def _word(self, data: str) -> int:
        out = await self.call(self.contract, data)
        return int(out[2:66] or "0", 16)

    async def _load(self, now: float) -> None:
        if self.expiry is None:
            self.expiry = float(await self._word(ROOT_HISTORY_EXPIRY))
        latest = await self._word(LATEST_ROOT)
        if self.latest is not None and latest != self.latest:
            self.superseded[self.latest] = now
        self.latest, self.lookups = latest, 0
        self.roots = frozenset({latest})

    async def is_valid(self, root: int, now: float) -> bool:
        await self.fresh(now)
        if root == self.latest:
            return True
        if self.expiry is None:  # fresh() loads it
            raise RuntimeError("root history expiry not loaded")
        seen = self.superseded.get(root)
        if seen is None:
            asked = self.unknown.get(root)
            if asked is not None and now - asked < self.interval:
                return False
            if self.lookups >= self.LOOKUPS_PER_INTERVAL:
                return False
            self.lookups += 1
            try:
                ts = await self._word(ROOT_HISTORY + f"{root:064x}")
            except Exception as exc:
                log.warning("rootHistory lookup failed: %s: %s", type(exc).__name__, exc)
                raise Overloaded(
                    "root lookup failed", reason="roots_unavailable", retry_after=self.interval
                ) from None
            if not ts:
                _remember(self.unknown, root, now)
                return False
            seen = float(ts)
            self.unknown.pop(root, None)
            _remember(self.superseded, root, seen)
        return now <= seen + self.expiry

    def age(self, root: int, now: float) -> float:
        seen = None if root == self.latest else self.superseded.get(root)
        return 0.0 if seen is None else max(0.0, now - seen)


def _remember(cache: OrderedDict[int, float], root: int, value: float, limit: int = 4096) -> None:
    cache[root] = value
    cache.move_to_end(root)
    while len(cache) > limit:
        cache.popitem(last=False)


def rpc_call(session: Callable[[], Awaitable[Any]], url: str, timeout: float = 5.0) -> Call:
    """``eth_call(to, data)`` → hex result; Reverted for an execution revert, RuntimeError otherwise."""

    async def call(to: str, data: str) -> str:
        http = await session()
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "eth_call",
            "params": [{"to": to, "data": data}, "latest"],
        }
        async with http.post(url, json=body, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            reply = await resp.json(content_type=None)
        if not isinstance(reply, dict):
            raise RuntimeError("eth_call: not a JSON-RPC reply")
        err = reply.get("error")
        if isinstance(err, dict) and "revert" in str(err.get("message", "")).lower():
            raise Reverted(str(err.get("message"))[:100])
        result = reply.get("result")
        if not isinstance(result, str) or not result.startswith("0x"):
            raise RuntimeError(f"eth_call: {str(reply)[:200]}")
        return result

    return call
