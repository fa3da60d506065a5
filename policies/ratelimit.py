"""GCRA rate limiting (generic cell rate algorithm), per subject or per network.

State per key is one number, the *theoretical arrival time* (TAT). For a rate
of one request every ``T`` seconds with ``burst`` extra requests allowed at
once, a request costing ``cost`` is allowed when

    new_tat = max(tat, now) + T·cost      and      new_tat - now <= T·(burst + 1)

and then ``tat := new_tat`` (kept until ``new_tat``; an absent key means
``tat = now``). A refused request changes nothing and may retry after
``new_tat - now - T·(burst + 1)`` seconds.

Implementations here, all the same math:

- :func:`gcra`: pure, for tests and for stores that hold the state themselves;
- :class:`MemoryGCRA`: in process, bounded, injected clock;
- :data:`REDIS_GCRA_LUA` + :func:`redis_gcra`: one atomic script, for a fleet
  (times in integer microseconds: Redis truncates Lua numbers it returns);
- :data:`SQLITE_GCRA_SCHEMA` + :func:`sqlite_gcra`: one ``BEGIN IMMEDIATE``
  transaction on a ``sqlite3`` connection (call it from the store's thread).

Keys: :func:`subject_key` and :func:`network_key` (IPv4 /24, IPv6 /64 by
default) give store keys in the ``pg:{gcra:...}`` namespace.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from popgate.policies.model import IPAddress, Rate
from popgate.verifiers.puzzle import network_of


@dataclass(frozen=True, slots=True)
class GcraResult:
    """``allowed``; the TAT now stored; seconds until a retry may pass (0 when
    allowed); requests still allowed right now after this one."""

    allowed: bool
    tat: float
    retry_after: float
    remaining: int


def gcra(tat: float | None, now: float, interval: float, burst: int, cost: int = 1) -> GcraResult:
    """One GCRA step. ``interval`` = T (seconds per request) > 0, ``burst`` >= 0."""
    base = now if tat is None or tat < now else tat
    new_tat = base + interval * cost
    limit = interval * (burst + 1)
    diff = new_tat - now
    eps = interval * 1e-6  # absorbs float rounding of unix-time seconds (ulp ~ 2e-7 s)
    if diff <= limit + eps:
        return GcraResult(True, new_tat, 0.0, int((limit - diff + eps) / interval))
    return GcraResult(False, base, diff - limit, 0)


def subject_key(subject: str) -> str:
    return f"pg:{{gcra:s:{subject}}}"


def network_key(ip: IPAddress | str, v4_prefix: int = 24, v6_prefix: int = 64) -> str:
    return f"pg:{{gcra:n:{network_of(ip, v4_prefix, v6_prefix)}}}"


class MemoryGCRA:
    """In-process GCRA limiter with an injected clock and a bounded key table."""

    __slots__ = ("_clock", "_max_keys", "_tat")

    def __init__(self, clock: Callable[[], float], max_keys: int = 100_000) -> None:
        self._clock = clock
        self._tat: dict[str, float] = {}
        self._max_keys = max_keys

    def hit(self, key: str, rate: Rate, cost: int = 1) -> GcraResult:
        """Count one request (of ``cost``) for ``key`` under ``rate``."""
        now = self._clock()
        result = gcra(self._tat.get(key), now, rate.interval, rate.burst, cost)
        if result.allowed:
            if key not in self._tat and len(self._tat) >= self._max_keys:
                self._evict(now)
            self._tat[key] = result.tat
        return result

    def _evict(self, now: float) -> None:
        expired = [k for k, t in self._tat.items() if t <= now]
        for k in expired:
            del self._tat[k]
        while len(self._tat) >= self._max_keys:  # all live: drop the oldest inserted
            del self._tat[next(iter(self._tat))]

    def __len__(self) -> int:
        return len(self._tat)


REDIS_GCRA_LUA = """
-- KEYS[1] = gcra key; ARGV = now_us, interval_us, burst, cost (integers)
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval * cost
local limit = interval * (burst + 1)
local diff = new_tat - now
if diff <= limit then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.max(1, math.ceil(diff / 1000)))
  return {1, string.format('%d', new_tat), 0, math.floor((limit - diff) / interval)}
end
return {0, string.format('%d', tat), string.format('%d', diff - limit), 0}
"""


async def redis_gcra(redis: Any, key: str, rate: Rate, now: float, cost: int = 1) -> GcraResult:
    """Run the GCRA script on a ``redis.asyncio`` client (one round trip)."""
    interval_us = max(1, round(rate.interval * 1e6))
    r = await redis.eval(REDIS_GCRA_LUA, 1, key, int(now * 1e6), interval_us, rate.burst, cost)
    return GcraResult(bool(int(r[0])), int(r[1]) / 1e6, int(r[2]) / 1e6, int(r[3]))


SQLITE_GCRA_SCHEMA = """
CREATE TABLE IF NOT EXISTS gcra (
    key TEXT PRIMARY KEY,
    tat REAL NOT NULL          -- theoretical arrival time, unix seconds; stale once < now
) WITHOUT ROWID
"""
SQLITE_GCRA_SELECT = "SELECT tat FROM gcra WHERE key = ?"
SQLITE_GCRA_UPSERT = (
    "INSERT INTO gcra (key, tat) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET tat = excluded.tat"
)
SQLITE_GCRA_PURGE = "DELETE FROM gcra WHERE tat < ?"


def sqlite_gcra(conn: sqlite3.Connection, key: str, rate: Rate, now: float, cost: int = 1) -> GcraResult:
    """GCRA step in one write transaction (``BEGIN IMMEDIATE`` unless the caller
    already holds one). Blocking: run it on the store's thread."""
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(SQLITE_GCRA_SELECT, (key,)).fetchone()
        result = gcra(row[0] if row else None, now, rate.interval, rate.burst, cost)
        if result.allowed:
            conn.execute(SQLITE_GCRA_UPSERT, (key, result.tat))
        if own:
            conn.execute("COMMIT")
    except BaseException:
        if own and conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return result


def retry_after_header(result: GcraResult) -> str:
    """Seconds for a ``Retry-After`` header (rounded up, at least 1)."""
    return str(max(1, math.ceil(result.retry_after)))
