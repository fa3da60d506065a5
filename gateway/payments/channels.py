"""batch-settlement channel records, atomic across a fleet.

One record per channel (a Redis hash ``pg:{chan:<id>}``, a SQLite row, or a
dict), with string fields: ``charged`` (the charged cumulative amount),
``smax`` / ``sig`` (the highest voucher: what a claim submits), the mirror of
the chain (``bal``, ``claimed``, ``wra`` = withdrawRequestedAt, ``rnonce``,
``synced``), ``cfg`` (the channelConfig JSON), ``claiming`` (a claim in
flight) and the busy lock ``pend`` / ``pexp``.

A request on a channel is, across every gateway sharing the store::

    reserve (lock, or ``channel_busy``; returns the record)
      ─► verify_batch(record) ─► origin ─► commit (charged := after,
          only while this request still holds the lock) | release

so two concurrent vouchers on one channel never both pass, and a voucher is
counted at most once. Amounts stay decimal strings (uint128 does not fit a
Lua number); :data:`_GT` compares them. ``claimed`` only grows.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from popgate.gateway.stores.base import Store, key
from popgate.gateway.stores.memory import MemoryStore
from popgate.gateway.stores.redis import RedisStore, _Script
from popgate.gateway.stores.sqlite import SQLiteStore

T = TypeVar("T")
INDEX = key("chan-index", "all")
Fields = dict[str, str]

_GT = """
local function gt(a, b)
  if #a ~= #b then return #a > #b end
  return a > b
end
"""

# What a request needs of the record (``cfg`` / ``since``: only whether they are set).
READ_FIELDS = ("charged", "bal", "claimed", "wra", "rnonce", "synced", "cfg", "since")
RESERVE = """
local FIELDS = {'charged', 'bal', 'claimed', 'wra', 'rnonce', 'synced', 'cfg', 'since'}
local now = tonumber(ARGV[1])
local pend = redis.call('HGET', KEYS[1], 'pend')
if pend and tonumber(redis.call('HGET', KEYS[1], 'pexp') or '0') > now then
  return {0}
end
redis.call('HSET', KEYS[1], 'pend', ARGV[2], 'pexp', tostring(now + tonumber(ARGV[3])))
return {1, redis.call('HMGET', KEYS[1], unpack(FIELDS))}
"""

# ``ver`` grows with every commit: the optimistic voucher path
# (:mod:`gateway.payments.voucher_cas`) compares it to the record it verified against.
COMMIT = """
if redis.call('HGET', KEYS[1], 'pend') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HDEL', KEYS[1], 'pend', 'pexp')
redis.call('HINCRBY', KEYS[1], 'ver', 1)
return 1
"""

RELEASE = """
if redis.call('HGET', KEYS[1], 'pend') == ARGV[1] then redis.call('HDEL', KEYS[1], 'pend', 'pexp') end
return 1
"""

# ARGV: field, value (a decimal string), then plain field/value pairs set with it.
RAISE = (
    _GT
    + """
local cur = redis.call('HGET', KEYS[1], ARGV[1]) or '0'
if not gt(ARGV[2], cur) then return 0 end
for i = 1, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 1
"""
)


def _gt(a: str, b: str) -> bool:
    return int(a) > int(b)


@dataclass(frozen=True, slots=True)
class Reservation:
    """A held busy lock and the record as it was when taken."""

    channel_id: str
    pending_id: str
    fields: Mapping[str, str]

    def charged(self) -> int | None:
        v = self.fields.get("charged")
        return None if v is None else int(v)


class ChannelBook:
    """Channel records in one store (memory, SQLite or Redis)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._mem: dict[str, Fields] = {}
        if isinstance(store, RedisStore):
            c = store.client
            self._reserve, self._commit = _Script(c, RESERVE), _Script(c, COMMIT)
            self._release, self._raise = _Script(c, RELEASE), _Script(c, RAISE)

    @staticmethod
    def _key(channel_id: str) -> str:
        return key("chan", channel_id.lower())

    async def reserve(self, channel_id: str, pending_id: str, now: float, ttl: float) -> Reservation | None:
        """Take the channel's busy lock for ``ttl`` s; None when another
        request holds it (``channel_busy``)."""
        now_ms, ttl_ms = int(now * 1000), max(1, int(ttl * 1000))
        k = self._key(channel_id)
        if isinstance(self._store, RedisStore):
            out = await self._store._do(self._reserve([k], [now_ms, pending_id, ttl_ms]))
            if not int(out[0]):
                return None
            got = {f: _s(v) for f, v in zip(READ_FIELDS, out[1], strict=True) if v is not None}
            return Reservation(channel_id, pending_id, got)

        def op(rec: Fields) -> Fields | None:
            if rec.get("pend") and int(rec.get("pexp", "0")) > now_ms:
                return None
            rec.update(pend=pending_id, pexp=str(now_ms + ttl_ms))
            return dict(rec)

        held = await self._local(channel_id, op)
        return None if held is None else Reservation(channel_id, pending_id, held)

    async def commit(self, res: Reservation, values: Mapping[str, str]) -> bool:
        """Write ``values`` and drop the lock, only if ``res`` still holds it."""
        k = self._key(res.channel_id)
        if isinstance(self._store, RedisStore):
            if "cfg" not in res.fields and "cfg" in values:  # first charge: index it before writing
                await self._store._do(self._store.client.sadd(INDEX, res.channel_id.lower()))
            flat = [x for kv in values.items() for x in kv]
            return bool(await self._store._do(self._commit([k], [res.pending_id, *flat])))

        def op(rec: Fields) -> bool:
            if rec.get("pend") != res.pending_id:
                return False
            rec.update(values)
            rec.pop("pend", None), rec.pop("pexp", None)
            return True

        return await self._local(res.channel_id, op)

    async def release(self, res: Reservation) -> None:
        """Drop the lock without charging (verification or origin failed)."""
        k = self._key(res.channel_id)
        if isinstance(self._store, RedisStore):
            await self._store._do(self._release([k], [res.pending_id]))
            return

        def op(rec: Fields) -> None:
            if rec.get("pend") == res.pending_id:
                rec.pop("pend", None), rec.pop("pexp", None)

        await self._local(res.channel_id, op)

    async def raise_field(self, channel_id: str, field: str, value: str, **also: str) -> bool:
        """Set ``field`` to ``value`` (and ``also``) only if it grows."""
        k = self._key(channel_id)
        if isinstance(self._store, RedisStore):
            flat = [x for kv in also.items() for x in kv]
            return bool(await self._store._do(self._raise([k], [field, value, *flat])))

        def op(rec: Fields) -> bool:
            if not _gt(value, rec.get(field, "0")):
                return False
            rec[field] = value
            rec.update(also)
            return True

        return await self._local(channel_id, op)

    async def get(self, channel_id: str) -> Fields | None:
        k = self._key(channel_id)
        if isinstance(self._store, RedisStore):
            raw = await self._store._do(self._store.client.hgetall(k))
            return {_s(a): _s(b) for a, b in raw.items()} or None
        return await self._local(channel_id, lambda rec: dict(rec) or None)

    async def ids(self) -> list[str]:
        """Every channel this store has seen (the claim worker's work list)."""
        if isinstance(self._store, RedisStore):
            return sorted(_s(x) for x in await self._store._do(self._store.client.smembers(INDEX)))
        if isinstance(self._store, SQLiteStore):
            return await self._store._run(_sqlite_ids)
        return sorted(self._mem)

    async def _local(self, channel_id: str, op: Callable[[Fields], T]) -> T:
        """Run ``op(record)`` atomically on a memory or SQLite record."""
        cid = channel_id.lower()
        if isinstance(self._store, SQLiteStore):
            return await self._store._run(lambda conn, now: _sqlite_op(conn, cid, op))
        if not isinstance(self._store, MemoryStore):
            raise TypeError(f"no channel records on {type(self._store).__name__}")
        rec = self._mem.setdefault(cid, {})
        result = op(rec)
        if not rec:
            del self._mem[cid]
        await asyncio.sleep(0)
        return result


def _ensure(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS channels (id TEXT PRIMARY KEY, fields TEXT NOT NULL)")


def _sqlite_ids(conn: sqlite3.Connection, now: float) -> list[str]:
    _ensure(conn)
    return [r[0] for r in conn.execute("SELECT id FROM channels ORDER BY id")]


def _sqlite_op(conn: sqlite3.Connection, cid: str, op: Callable[[Fields], T]) -> T:
    _ensure(conn)
    row = conn.execute("SELECT fields FROM channels WHERE id = ?", (cid,)).fetchone()
    rec: Fields = json.loads(row[0]) if row else {}
    result = op(rec)
    if not rec:
        conn.execute("DELETE FROM channels WHERE id = ?", (cid,))
    else:
        conn.execute(
            "INSERT INTO channels(id, fields) VALUES (?, ?)"
            " ON CONFLICT(id) DO UPDATE SET fields = excluded.fields",
            (cid, json.dumps(rec, sort_keys=True)),
        )
    return result


def _s(x: Any) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)
