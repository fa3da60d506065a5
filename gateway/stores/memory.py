"""In-process store for tests and the ``popgate verify`` command.

Single event loop, no awaits inside an operation: each is atomic by
construction. ``clock`` is injectable so tests control expiry.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from popgate.gateway.payments.ledger import LedgerEntry, LedgerModel

from popgate.gateway.payments.ledger import LedgerModel
from popgate.policies.ratelimit import gcra


class MemoryStore:
    """Dict-backed :class:`~gateway.stores.base.Store`."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._data: dict[str, tuple[object, float | None]] = {}
        self._credits: LedgerModel | None = None

    def _live(self, key: str) -> object | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires = item
        if expires is not None and self._clock() >= expires:
            del self._data[key]
            return None
        return value

    def _count(self, key: str) -> int | None:
        """A live counter's value; a key holding anything else is not one (Redis: WRONGTYPE)."""
        value = self._live(key)
        if value is not None and not isinstance(value, int):
            raise TypeError(f"{key!r} holds {type(value).__name__}, not a counter")
        return value

    def _expiry(self, ttl: float | None) -> float | None:
        return None if ttl is None else self._clock() + ttl

    async def claim(self, key: str, ttl: float, limit: int = 1) -> bool:
        count = self._count(key)
        if count is None:
            self._data[key] = (1, self._expiry(ttl))
            return limit >= 1
        if count >= limit:
            return False
        self._data[key] = (count + 1, self._data[key][1])
        return True

    async def incr(self, key: str, amount: int, window: float) -> int:
        count = self._count(key)
        if count is None:
            self._data[key] = (amount, self._expiry(window))
            return amount
        self._data[key] = (count + amount, self._data[key][1])
        return count + amount

    async def debit(self, key: str, amount: int) -> int | None:
        balance = self._count(key) or 0
        if balance < amount:
            return None
        self._data[key] = (balance - amount, None)
        return balance - amount

    async def credit(self, key: str, amount: int) -> int:
        balance = self._count(key) or 0
        self._data[key] = (balance + amount, None)
        return balance + amount

    async def get(self, key: str) -> bytes | None:
        value = self._live(key)
        if value is None:
            return None
        return value if isinstance(value, bytes) else str(value).encode()

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        self._data[key] = (bytes(value), self._expiry(ttl))

    async def delete(self, key: str) -> None:
        self._data.pop(key, None)

    async def gcra(self, key: str, interval: float, burst: int, cost: int = 1) -> tuple[bool, float]:
        tat = self._live(key)
        now = self._clock()
        result = gcra(tat if isinstance(tat, float) else None, now, interval, burst, cost)
        if result.allowed:
            self._data[key] = (result.tat, result.tat)
        return result.allowed, result.retry_after

    # Prepaid credits ledger: the reference model itself (atomic: no awaits).
    def _ledger_model(self) -> LedgerModel:
        if self._credits is None:
            self._credits = LedgerModel()
        return self._credits

    async def debit_ledger(self, account: str, amount: int, ref: str, at: float) -> int | None:
        return self._ledger_model().debit_ledger(account, amount, ref, at)

    async def credit_ledger(self, account: str, amount: int, kind: str, ref: str, at: float) -> int:
        return self._ledger_model().credit_ledger(account, amount, kind, ref, at)

    async def ledger(self, account: str, since_seq: int = 0, limit: int = 1000) -> list[LedgerEntry]:
        return self._ledger_model().ledger(account, since_seq, limit)

    async def balance(self, account: str) -> int:
        return self._ledger_model().balance(account)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        self._data.clear()
