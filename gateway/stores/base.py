"""The Store protocol: the few atomic operations popgate needs from a backend.

Every operation is atomic on its own and touches one logical key, so a Redis
Cluster can serve it (keys carry a hash tag, see :func:`key`, which lives in
``verifiers.spend`` and is re-exported here). :func:`spend` claims what a
verifier returned to spend (a :class:`~verifiers.spend.Spend`). Backends:
memory (tests, single process), SQLite (embedded default, durable, one host)
and Redis (a fleet). ``tests/stores`` runs one contract suite against all.

Errors: a backend raises :class:`StoreUnavailable` when it cannot answer;
callers apply the action's configured failure mode (closed by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from popgate.verifiers.spend import Spend, key

if TYPE_CHECKING:
    from popgate.gateway.payments.ledger import LedgerEntry


class StoreUnavailable(Exception):
    """The backend could not be reached or did not answer in time."""


__all__ = ["Claims", "Spend", "Store", "StoreUnavailable", "key", "spend"]


class Claims(Protocol):
    """The one store operation spending needs (a Store, or a guarded one)."""

    async def claim(self, key: str, ttl: float, limit: int = 1) -> bool: ...


async def spend(store: Claims, item: Spend) -> None:
    """Claim ``item`` in ``store``; raise ``item.refused()`` (a
    VerificationError, ``replayed`` mostly) when it was already spent."""
    if not await store.claim(item.key, item.ttl, item.limit):
        raise item.refused()


@runtime_checkable
class Store(Protocol):
    """Atomic primitives shared by every gateway instance using the store."""

    async def claim(self, key: str, ttl: float, limit: int = 1) -> bool:
        """Count one use of ``key``; True while uses stay within ``limit``.

        ``limit=1`` is spend-once: of any number of concurrent claims of one
        key, exactly one returns True until the key expires ``ttl`` seconds
        after its first claim. A refused claim does not count.
        """
        ...

    async def incr(self, key: str, amount: int, window: float) -> int:
        """Add ``amount`` to a counter that resets ``window`` seconds after
        its first increment; return the new value."""
        ...

    async def debit(self, key: str, amount: int) -> int | None:
        """Subtract ``amount`` if the balance covers it; return the new
        balance, or None (and change nothing) when it does not."""
        ...

    async def credit(self, key: str, amount: int) -> int:
        """Add ``amount`` to a balance (created at 0); return the new one."""
        ...

    async def get(self, key: str) -> bytes | None:
        """Return the value under ``key`` or None when absent or expired."""
        ...

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        """Store ``value``; it expires after ``ttl`` seconds when given."""
        ...

    async def delete(self, key: str) -> None:
        """Remove ``key`` if present."""
        ...

    async def gcra(self, key: str, interval: float, burst: int, cost: int = 1) -> tuple[bool, float]:
        """One GCRA rate-limit step (see :mod:`policies.ratelimit`), atomic,
        timed by the backend's own clock (Redis: server ``TIME``).

        One request every ``interval`` seconds, ``burst`` extra at once; a
        request of ``cost`` is counted only when allowed. Returns
        ``(allowed, retry_after_seconds)`` (0.0 when allowed).
        """
        ...

    async def debit_ledger(self, account: str, amount: int, ref: str, at: float) -> int | None:
        """Prepaid credits: subtract ``amount`` (> 0) from ``account`` and
        append a ``debit`` entry to its ledger, atomically; return the new
        balance, or None (and change nothing) when the balance is short.
        A non-empty ``ref`` seen before on this account changes nothing and
        returns the balance after the original (idempotent retries).
        Semantics: :class:`gateway.payments.ledger.LedgerModel`."""
        ...

    async def credit_ledger(self, account: str, amount: int, kind: str, ref: str, at: float) -> int:
        """Add ``amount`` (> 0) with ``kind`` ``topup`` or ``refund`` and
        append the entry, atomically; return the new balance (idempotent on
        ``ref`` like :meth:`debit_ledger`). Raises ValueError on bad input."""
        ...

    async def ledger(self, account: str, since_seq: int = 0, limit: int = 1000) -> list[LedgerEntry]:
        """Ledger entries of ``account`` with ``seq > since_seq``, oldest
        first, at most ``limit``. The ledger is append-only and always sums
        to :meth:`balance` (:func:`gateway.payments.ledger.reconcile`)."""
        ...

    async def balance(self, account: str) -> int:
        """The credit balance of ``account`` (0 when unknown)."""
        ...

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the backend answers."""
        ...

    async def close(self) -> None:
        """Release connections and files."""
        ...
