"""Store backends behind one protocol; :func:`open_store` picks one by URL."""

from __future__ import annotations

from popgate.gateway.stores.base import Store, StoreUnavailable, key

__all__ = ["Store", "StoreUnavailable", "key", "open_store"]


def open_store(url: str, *, timeout: float = 0.5) -> Store:
    """Open ``memory://``, ``sqlite:///PATH``, ``redis://HOST:PORT/DB`` or
    ``redis+cluster://HOST:PORT[,HOST:PORT...]/`` (a Redis Cluster; ``rediss+cluster://``
    for TLS).

    Raises ValueError for any other scheme.
    """
    # why: only the configured backend is imported (each opens its own client library)
    if url.startswith("memory://"):
        from popgate.gateway.stores.memory import MemoryStore  # why: see above

        return MemoryStore()
    if url.startswith("sqlite:///"):
        from popgate.gateway.stores.sqlite import SQLiteStore  # why: see above

        return SQLiteStore(url[len("sqlite:///") :] or ":memory:", timeout=max(timeout, 0.25))
    if url.startswith(("redis://", "rediss://", "redis+cluster://", "rediss+cluster://")):
        from popgate.gateway.stores.redis import RedisStore  # why: see above

        return RedisStore(url, timeout=timeout)
    raise ValueError(f"unsupported store URL: {url!r}")
