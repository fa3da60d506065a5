"""The ``redis.asyncio`` client behind each Redis store URL form.

- one server: a ``BlockingConnectionPool`` (a burst beyond the pool waits, bounded);
- Redis Cluster: ``RedisCluster`` (follows MOVED/ASK, re-reads the slot map);
- Sentinel: ``Sentinel(...).master_for(name)``. Each new connection asks the
  Sentinels where the master is (first one that answers with a master it does
  not consider down), so after a failover the store follows the promoted replica
  by itself; a connection still open to a demoted master gets READONLY, is
  dropped, and the next one asks again.

Every client has bounded timeouts. The Sentinel client also has a small retry
policy: connection errors (refused, reset, READONLY from a demoted master) are
retried twice after 20-100 ms, each retry asking the Sentinels again; timeouts never
(a command that timed out may have run; running it again is the caller's decision).
A Sentinel that does not answer costs one connect timeout, then the next is asked.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

from popgate.gateway.stores.redis_urls import parse_cluster_url, parse_sentinel_url

POOL_SIZE = 64  # connections (one server, sentinel) / in-flight commands (cluster) per store


def _retry() -> Retry:
    return Retry(
        ExponentialWithJitterBackoff(base=0.02, cap=0.1), retries=2, supported_errors=(RedisConnectionError,)
    )


def single_client(url: str, timeout: float, wait: float) -> Any:
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        max_connections=POOL_SIZE,
        timeout=wait,
    )
    return aioredis.Redis(connection_pool=pool)


def cluster_client(url: str, timeout: float) -> Any:
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


def sentinel_client(url: str, timeout: float) -> tuple[Any, Any]:
    """``(master client, Sentinel)``: close both."""
    u = parse_sentinel_url(url)
    opts = {k: v for k, v in u.options.items() if v is not None}
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        u.sentinels,
        sentinel_kwargs={
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
            "ssl": opts.get("ssl", False),
            "retry": Retry(NoBackoff(), 0),  # a dead Sentinel: next one, at once
        },
    )
    client = sentinels.master_for(
        u.master,
        db=u.db,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        # In-flight commands are capped below it by RedisStore's semaphore (this pool
        # raises instead of waiting when full).
        max_connections=POOL_SIZE * 2,
        retry=_retry(),
        **opts,
    )
    return client, sentinels
