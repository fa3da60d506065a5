"""Redis store (``redis.asyncio``): the shared store for a fleet of gateways.

Multi-step operations are Lua scripts, so they are atomic across every
gateway sharing the server. Each script touches one key, or several keys
sharing one hash tag (the credits ledger), so the store also works against a
Redis Cluster (keys carry hash tags, see :func:`gateway.stores.base.key`).

URL forms (parsed in :mod:`gateway.stores.redis_urls`, clients built in
:mod:`gateway.stores.redis_clients`):

- ``redis://[user:pass@]HOST:PORT/DB`` (``rediss://`` for TLS): one server
  (or a proxy in front of a cluster).
- ``redis+cluster://[user:pass@]HOST:PORT[,HOST:PORT...]/``: a Redis Cluster
  (startup nodes; the client discovers the rest and follows MOVED/ASK).
- ``redis+sentinel://[user:pass@]HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB]``: the
  master the listed Sentinels watch; after a failover the store follows the
  promoted replica by itself.

``replica_acks`` (default 1 with Sentinel, else 0): every write is followed by
``WAIT replica_acks`` on the same connection and counts as done only when that
many replicas acknowledged it within half the timeout; otherwise the store raises
StoreUnavailable (the caller fails closed). Sentinel promotes the most up-to-date
replica, so a write acknowledged this way survives the master's death.

Scripts are sent as ``EVALSHA`` routed by their key, falling back to ``EVAL``
on NOSCRIPT: that loads the script on the one node owning the key (a new or
failed-over master starts with an empty script cache) without needing every
master to be up, which ``SCRIPT LOAD`` (sent to all masters) would.

Timeouts are bounded by ``timeout``; any connection, timeout or cluster
error becomes :class:`StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from popgate.gateway.payments.ledger import LEDGER_LUA, LedgerEntry, redis_keys
from popgate.gateway.stores import redis_clients
from popgate.gateway.stores.base import StoreUnavailable
from popgate.gateway.stores.redis_batch import GroupCommit
from popgate.gateway.stores.redis_urls import CLUSTER_SCHEMES, SENTINEL_SCHEMES, parse_cluster_url

__all__ = ["RedisStore", "parse_cluster_url"]
POOL_SIZE = redis_clients.POOL_SIZE

CLAIM = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then
  redis.call('DECR', KEYS[1])
  return 0
end
return 1
"""

INCR = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) or redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return n
"""

DEBIT = """
local b = tonumber(redis.call('GET', KEYS[1]) or '0')
local a = tonumber(ARGV[1])
if b < a then return -1 end
return redis.call('DECRBY', KEYS[1], a)
"""

# GCRA on the server's clock (TIME), integer microseconds. ARGV: interval_us, burst, cost.
GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local limit = interval * (tonumber(ARGV[2]) + 1)
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval * tonumber(ARGV[3])
local diff = new_tat - now
if diff <= limit then
  redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.max(1, math.ceil(diff / 1000)))
  return {1, 0}
end
return {0, string.format('%d', diff - limit)}
"""


def _ms(seconds: float) -> int:
    return max(1, int(seconds * 1000))


async def _replicated(client: Any, acks: int, wait_ms: int, *command: Any) -> Any:
    """``command`` then ``WAIT acks wait_ms`` on one connection (a pipeline);
    StoreUnavailable unless ``acks`` replicas acknowledged it."""
    pipe = client.pipeline(transaction=False)
    pipe.execute_command(*command)
    pipe.execute_command("WAIT", acks, wait_ms)
    result, acked = await pipe.execute(raise_on_error=False)
    for r in (result, acked):
        if isinstance(r, Exception):
            raise r
    if int(acked) < acks:
        raise StoreUnavailable(f"redis: write acknowledged by {acked} of {acks} replicas in {wait_ms} ms")
    return result


class _Script:
    """A Lua script run with EVALSHA on the node owning its keys, EVAL on NOSCRIPT
    (then ``WAIT`` for ``acks`` replicas when asked)."""

    def __init__(self, client: Any, source: str, acks: int = 0, wait_ms: int = 0) -> None:
        self.client, self.source, self.acks, self.wait_ms = client, source, acks, wait_ms
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        if self.acks:
            try:
                return await _replicated(
                    self.client, self.acks, self.wait_ms, "EVALSHA", self.sha, len(keys), *keys, *args
                )
            except NoScriptError:
                return await _replicated(
                    self.client, self.acks, self.wait_ms, "EVAL", self.source, len(keys), *keys, *args
                )
        try:
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.client.eval(self.source, len(keys), *keys, *args)


class RedisStore:
    """:class:`~gateway.stores.base.Store` on one Redis server, a Redis Cluster, or
    the master a set of Sentinels watch."""

    def __init__(
        self, url: str, *, timeout: float = 0.5, client: Any = None, replica_acks: int | None = None
    ) -> None:
        self.cluster = url.startswith(CLUSTER_SCHEMES)
        sentinel = url.startswith(SENTINEL_SCHEMES)
        self.replica_acks = (1 if sentinel else 0) if replica_acks is None else replica_acks
        if self.replica_acks < 0 or (self.cluster and self.replica_acks):
            raise ValueError("replica_acks: 0 or more, and 0 on a Redis Cluster")
        # A burst beyond the pool waits (bounded) for a connection instead of failing.
        self._wait = max(1.0, timeout * 4)
        self._wait_ms = max(1, int(timeout * 500))  # WAIT answers before the socket times out
        self._slots: asyncio.Semaphore | None = None
        self._sentinels: Any = None
        if client is None and self.cluster:
            client = redis_clients.cluster_client(url, timeout)
        elif client is None and sentinel:
            client, self._sentinels = redis_clients.sentinel_client(url, timeout)
        elif client is None:
            client = redis_clients.single_client(url, timeout, self._wait)
        if self.cluster or sentinel:
            # These pools raise when full: bound in-flight commands instead.
            self._slots = asyncio.Semaphore(POOL_SIZE)
        self._client = client
        acks, ms = self.replica_acks, self._wait_ms
        self._claim = _Script(client, CLAIM, acks, ms)
        self._incr = _Script(client, INCR, acks, ms)
        self._debit = _Script(client, DEBIT, acks, ms)
        self._gcra = _Script(client, GCRA, acks, ms)
        self._ledger = _Script(client, LEDGER_LUA, acks, ms)
        self.group = GroupCommit(client, acks, ms, self._slots)

    async def _write(self, *command: Any) -> Any:
        if self.replica_acks:
            return await _replicated(self._client, self.replica_acks, self._wait_ms, *command)
        return await self._client.execute_command(*command)

    @property
    def client(self) -> Any:
        """The underlying client, for operations that extend the store."""
        return self._client

    async def _do(self, awaitable: Any) -> Any:
        try:
            if self._slots is None:
                return await awaitable
            try:
                await asyncio.wait_for(self._slots.acquire(), self._wait)
            except TimeoutError:
                raise StoreUnavailable(f"redis: no free connection after {self._wait}s") from None
            try:
                return await awaitable
            finally:
                self._slots.release()
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        finally:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never awaited when no slot came free: no warning

    def incr_soon(self, key: str, amount: int, window: float) -> asyncio.Future[Any] | None:
        """:meth:`incr` queued for the next group commit without waiting for it
        (a tally nothing waits on); None on a Redis Cluster (use :meth:`incr`)."""
        if self.cluster:
            return None
        return self.group.submit(self._incr, [key], [amount, _ms(window)])

    async def run_script(self, script: _Script, keys: list[str], args: list[Any]) -> Any:
        """``script`` group-committed with the calls made meanwhile (one
        pipeline, :mod:`gateway.stores.redis_batch`); alone on a Redis Cluster,
        whose client does not pipeline scripts."""
        if self.cluster:
            return await self._do(script(keys, args))
        return await self.group.run(script, keys, args)

    async def claim(self, key: str, ttl: float, limit: int = 1) -> bool:
        if limit < 1:
            return False
        return bool(await self._do(self._claim(keys=[key], args=[_ms(ttl), limit])))

    async def incr(self, key: str, amount: int, window: float) -> int:
        # group-committed: the fee tally of every paid request goes through here
        return int(await self.run_script(self._incr, [key], [amount, _ms(window)]))

    async def debit(self, key: str, amount: int) -> int | None:
        result = int(await self._do(self._debit(keys=[key], args=[amount])))
        return None if result < 0 else result

    async def credit(self, key: str, amount: int) -> int:
        return int(await self._do(self._write("INCRBY", key, amount)))

    async def get(self, key: str) -> bytes | None:
        value = await self._do(self._client.get(key))
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._do(self._write("SET", key, value, *(() if ttl is None else ("PX", _ms(ttl)))))

    async def delete(self, key: str) -> None:
        await self._do(self._write("DEL", key))

    async def gcra(self, key: str, interval: float, burst: int, cost: int = 1) -> tuple[bool, float]:
        r = await self._do(self._gcra(keys=[key], args=[max(1, round(interval * 1e6)), burst, cost]))
        return bool(int(r[0])), int(r[1]) / 1e6

    # Prepaid credits: gateway.payments.ledger.LEDGER_LUA, one script over four keys
    # sharing the hash tag {credits:<account>} (cluster-safe).
    async def debit_ledger(self, account: str, amount: int, ref: str, at: float) -> int | None:
        if amount <= 0:
            raise ValueError("amount must be positive")
        r = int(
            await self._do(
                self._ledger(keys=redis_keys(account), args=[-amount, "debit", ref, repr(float(at))])
            )
        )
        return None if r < 0 else r

    async def credit_ledger(self, account: str, amount: int, kind: str, ref: str, at: float) -> int:
        if amount <= 0 or kind not in ("topup", "refund"):
            raise ValueError("positive amount and kind topup|refund required")
        return int(
            await self._do(self._ledger(keys=redis_keys(account), args=[amount, kind, ref, repr(float(at))]))
        )

    async def ledger(self, account: str, since_seq: int = 0, limit: int = 1000) -> list[LedgerEntry]:
        rows = await self._do(
            self._client.xrange(redis_keys(account)[1], f"{since_seq + 1}-0", "+", count=limit)
        )
        out = []
        for sid, f in rows:
            sid = sid.decode() if isinstance(sid, bytes) else sid
            g = {
                (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in f.items()
            }
            out.append(
                LedgerEntry(
                    int(sid.split("-")[0]),
                    account,
                    int(g["delta"]),
                    int(g["bal"]),
                    g["kind"],
                    g["ref"],
                    float(g["at"]),
                )
            )
        return out

    async def balance(self, account: str) -> int:
        raw = await self._do(self._client.get(redis_keys(account)[0]))
        return int(raw) if raw is not None else 0

    async def ping(self) -> None:
        if self.cluster:
            # Every master: a down master leaves its slots unserved (cluster_state:fail).
            await self._do(self._client.ping(target_nodes=self._client.PRIMARIES))
        else:
            await self._do(self._client.ping())

    async def close(self) -> None:
        try:
            await self.group.close()
        except (RedisError, RedisClusterException, OSError):
            pass
        for c in (self._client, self._sentinels):
            try:
                if c is not None:
                    await c.aclose()
            except (RedisError, RedisClusterException, OSError):
                pass
