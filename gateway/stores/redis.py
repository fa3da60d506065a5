"""Redis store (``redis.asyncio``): the shared store for a fleet of gateways.

Multi-step operations are Lua scripts, so they are atomic across every
gateway sharing the server. Each script touches one key, or several keys
sharing one hash tag (the credits ledger), so the store also works against a
Redis Cluster (keys carry hash tags, see :func:`gateway.stores.base.key`).

Two URL forms:

- ``redis://[user:pass@]HOST:PORT/DB`` (``rediss://`` for TLS): one server
  (or a proxy in front of a cluster), a plain ``redis.asyncio.Redis``.
- ``redis+cluster://[user:pass@]HOST:PORT[,HOST:PORT...]/`` (``rediss+cluster://``
  for TLS): a Redis Cluster through ``redis.asyncio.cluster.RedisCluster``. The
  listed nodes are startup nodes only (any one reachable node is enough; the
  client discovers the rest from ``CLUSTER SLOTS``) and follows MOVED/ASK
  redirects. Database 0 only (clusters have no others).

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
import re
from typing import Any
from urllib.parse import unquote

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisClusterException, RedisError

from popgate.gateway.payments.ledger import LEDGER_LUA, LedgerEntry, redis_keys
from popgate.gateway.stores.base import StoreUnavailable

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
POOL_SIZE = 64  # connections (one server) / in-flight commands (cluster) per store

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


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Split ``redis+cluster://[user:pass@]H:P[,H:P...]/`` into startup nodes and
    client options (username, password, ssl). Raises ValueError when malformed."""
    scheme = next((s for s in CLUSTER_SCHEMES if url.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"not a cluster URL (expected {' or '.join(CLUSTER_SCHEMES)}): {url!r}")
    rest = url[len(scheme) :]
    netloc, _, tail = rest.partition("/")
    if "?" in netloc or "#" in netloc or "?" in tail or "#" in tail:
        raise ValueError("redis+cluster:// URLs take no query or fragment")
    if tail not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, got /{tail}")
    opts: dict[str, Any] = {"ssl": scheme.startswith("rediss")}
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        opts["username"] = unquote(user) or None
        opts["password"] = unquote(password) if colon else None
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?", item.strip())
        if m is None:
            raise ValueError(f"bad cluster node {item!r} (expected HOST:PORT)")
        port = int(m.group(2) or 6379)
        if not 0 < port < 65536:
            raise ValueError(f"bad port in cluster node {item!r}")
        nodes.append((m.group(1).strip("[]"), port))
    return nodes, opts


def _cluster_client(url: str, timeout: float) -> Any:
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff

    nodes, opts = parse_cluster_url(url)
    return RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in nodes],
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        # Per node. In-flight commands are capped below it by RedisStore's semaphore
        # (the cluster client raises instead of waiting when a node's pool is full).
        max_connections=POOL_SIZE * 2,
        # Connection errors, CLUSTERDOWN and uncovered slots: re-read the slot map and
        # retry twice (a failover), then fail (closed) instead of retrying ten times.
        retry=Retry(ExponentialWithJitterBackoff(base=0.01, cap=0.1), retries=2),
        **{k: v for k, v in opts.items() if v is not None},
    )


class _Script:
    """A Lua script run with EVALSHA on the node owning its keys, EVAL on NOSCRIPT."""

    def __init__(self, client: Any, source: str) -> None:
        self.client, self.source = client, source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, keys: list[str], args: list[Any]) -> Any:
        try:
            return await self.client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            return await self.client.eval(self.source, len(keys), *keys, *args)


class RedisStore:
    """:class:`~gateway.stores.base.Store` on one Redis server or a Redis Cluster."""

    def __init__(self, url: str, *, timeout: float = 0.5, client: Any = None) -> None:
        self.cluster = url.startswith(CLUSTER_SCHEMES)
        # A burst beyond the pool waits (bounded) for a connection instead of failing.
        self._wait = max(1.0, timeout * 4)
        self._slots: asyncio.Semaphore | None = None
        if client is None and self.cluster:
            client = _cluster_client(url, timeout)
            # RedisCluster's per-node pools raise when full: bound in-flight commands.
            self._slots = asyncio.Semaphore(POOL_SIZE)
        elif client is None:
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                health_check_interval=30,
                max_connections=POOL_SIZE,
                timeout=self._wait,
            )
            client = aioredis.Redis(connection_pool=pool)
        self._client = client
        self._claim = _Script(client, CLAIM)
        self._incr = _Script(client, INCR)
        self._debit = _Script(client, DEBIT)
        self._gcra = _Script(client, GCRA)
        self._ledger = _Script(client, LEDGER_LUA)

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
                raise StoreUnavailable(f"redis cluster: no free connection after {self._wait}s") from None
            try:
                return await awaitable
            finally:
                self._slots.release()
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc
        finally:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never awaited when no slot came free: no warning

    async def claim(self, key: str, ttl: float, limit: int = 1) -> bool:
        if limit < 1:
            return False
        return bool(await self._do(self._claim(keys=[key], args=[_ms(ttl), limit])))

    async def incr(self, key: str, amount: int, window: float) -> int:
        return int(await self._do(self._incr(keys=[key], args=[amount, _ms(window)])))

    async def debit(self, key: str, amount: int) -> int | None:
        result = int(await self._do(self._debit(keys=[key], args=[amount])))
        return None if result < 0 else result

    async def credit(self, key: str, amount: int) -> int:
        return int(await self._do(self._client.incrby(key, amount)))

    async def get(self, key: str) -> bytes | None:
        value = await self._do(self._client.get(key))
        return None if value is None else bytes(value)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        await self._do(self._client.set(key, value, px=None if ttl is None else _ms(ttl)))

    async def delete(self, key: str) -> None:
        await self._do(self._client.delete(key))

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
            await self._client.aclose()
        except (RedisError, RedisClusterException, OSError):
            pass
