"""Store backends behind one protocol; :func:`open_store` picks one by URL."""

from __future__ import annotations

from popgate.gateway.stores.base import Store, StoreUnavailable, key
from popgate.gateway.stores.redis_urls import REDIS_SCHEMES

__all__ = ["Store", "StoreUnavailable", "key", "open_store"]


def open_store(url: str, *, timeout: float = 0.5, replica_acks: int | None = None) -> Store:
    """Open ``memory://``, ``sqlite:///PATH``, ``redis://HOST:PORT/DB``,
    ``redis+cluster://HOST:PORT[,HOST:PORT...]/`` (a Redis Cluster) or
    ``redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB]`` (the master the
    Sentinels watch); ``rediss`` for TLS. ``replica_acks``: Redis only, see
    :class:`gateway.stores.redis.RedisStore` (None: its default).

    Raises ValueError for any other scheme.
    """
    # why: only the configured backend is imported (each opens its own client library)
    if url.startswith("memory://"):
        from popgate.gateway.stores.memory import MemoryStore  # why: see above

        return MemoryStore()
    if url.startswith("sqlite:///"):
        from popgate.gateway.stores.sqlite import SQLiteStore  # why: see above

        return SQLiteStore(url[len("sqlite:///") :] or ":memory:", timeout=max(timeout, 0.25))
    if url.startswith(REDIS_SCHEMES):
        from popgate.gateway.stores.redis import RedisStore  # why: see above

        return RedisStore(url, timeout=timeout, replica_acks=replica_acks)
    raise ValueError(f"unsupported store URL: {url!r}")
