"""Embedded durable store on stdlib sqlite3 (WAL), off the event loop.

All statements run on one dedicated thread that owns the connection, so the
event loop never blocks on disk. Each operation is one ``BEGIN IMMEDIATE``
transaction: atomic against other threads and against other processes using
the same file (several workers on one host). Expired rows are ignored on read
and purged in batches.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from popgate.gateway.payments.ledger import (
    LEDGER_OP_SQL,
    LEDGER_REF_SQL,
    LEDGER_SCHEMA,
    LEDGER_SELECT_SQL,
    LedgerEntry,
)
from popgate.gateway.stores.base import StoreUnavailable
from popgate.policies.ratelimit import gcra

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB,
    num INTEGER,
    expires REAL
);
CREATE INDEX IF NOT EXISTS kv_expires ON kv(expires) WHERE expires IS NOT NULL;
"""


class SQLiteStore:
    """File-backed :class:`~gateway.stores.base.Store`; ``path`` may be ``:memory:``."""

    def __init__(self, path: str, *, timeout: float = 5.0, clock: Callable[[], float] = time.time) -> None:
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._timeout = timeout
        self._clock = clock
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="popgate-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._ops = 0

    def _connect(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            try:
                self._set_up(conn)
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _set_up(self, conn: sqlite3.Connection) -> None:
        # Switching to WAL takes an exclusive lock and does not wait on the busy
        # handler: workers opening a new file together retry it, within the timeout.
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                if conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() in ("wal", "memory"):
                    break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise sqlite3.OperationalError("could not switch the store to WAL mode")
            time.sleep(0.01)
        conn.execute("PRAGMA synchronous=FULL")
        conn.executescript(SCHEMA)
        conn.executescript(LEDGER_SCHEMA)

    async def _run(self, fn: Callable[[sqlite3.Connection, float], T]) -> T:
        queued = time.monotonic()

        def job() -> T:
            # One thread serves every operation: when the file is locked each
            # op busy-waits up to ``timeout``; ops that already waited that
            # long in the queue give up at once instead of piling up.
            if time.monotonic() - queued > self._timeout:
                raise StoreUnavailable("sqlite: operation queued past the store timeout")
            conn = self._connect()
            now = self._clock()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn, now)
                self._ops += 1
                if self._ops % 1000 == 0:
                    conn.execute("DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?", (now,))
                conn.execute("COMMIT")
                return result
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, job)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite: {exc}") from exc

    @staticmethod
    def _row(conn: sqlite3.Connection, key: str, now: float) -> tuple[Any, Any, Any] | None:
        row: tuple[Any, Any, Any] | None = conn.execute(
            "SELECT value, num, expires FROM kv WHERE key = ?", (key,)
        ).fetchone()
        if row is not None and row[2] is not None and row[2] <= now:
            conn.execute("DELETE FROM kv WHERE key = ?", (key,))
            return None
        return row

    async def claim(self, key: str, ttl: float, limit: int = 1) -> bool:
        def op(conn: sqlite3.Connection, now: float) -> bool:
            row = self._row(conn, key, now)
            if row is None:
                if limit < 1:
                    return False
                conn.execute("INSERT INTO kv(key, num, expires) VALUES (?, 1, ?)", (key, now + ttl))
                return True
            if row[1] >= limit:
                return False
            conn.execute("UPDATE kv SET num = num + 1 WHERE key = ?", (key,))
            return True

        return await self._run(op)

    async def incr(self, key: str, amount: int, window: float) -> int:
        def op(conn: sqlite3.Connection, now: float) -> int:
            row = self._row(conn, key, now)
            if row is None:
                conn.execute(
                    "INSERT INTO kv(key, num, expires) VALUES (?, ?, ?)", (key, amount, now + window)
                )
                return amount
            conn.execute("UPDATE kv SET num = num + ? WHERE key = ?", (amount, key))
            return int(row[1]) + amount

        return await self._run(op)

    async def debit(self, key: str, amount: int) -> int | None:
        def op(conn: sqlite3.Connection, now: float) -> int | None:
            row = self._row(conn, key, now)
            balance = int(row[1]) if row is not None and row[1] is not None else 0
            if balance < amount:
                return None
            conn.execute("UPDATE kv SET num = ? WHERE key = ?", (balance - amount, key))
            return balance - amount

        return await self._run(op)

    async def credit(self, key: str, amount: int) -> int:
        def op(conn: sqlite3.Connection, now: float) -> int:
            row = self._row(conn, key, now)
            balance = (int(row[1]) if row is not None and row[1] is not None else 0) + amount
            conn.execute(
                "INSERT INTO kv(key, num, expires) VALUES (?, ?, NULL) "
                "ON CONFLICT(key) DO UPDATE SET num = excluded.num, expires = NULL",
                (key, balance),
            )
            return balance

        return await self._run(op)

    async def get(self, key: str) -> bytes | None:
        def op(conn: sqlite3.Connection, now: float) -> bytes | None:
            row = self._row(conn, key, now)
            if row is None:
                return None
            return bytes(row[0]) if row[0] is not None else str(row[1]).encode()

        return await self._run(op)

    async def set(self, key: str, value: bytes, ttl: float | None = None) -> None:
        def op(conn: sqlite3.Connection, now: float) -> None:
            conn.execute(
                "INSERT INTO kv(key, value, num, expires) VALUES (?, ?, NULL, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value, num = NULL, "
                "expires = excluded.expires",
                (key, bytes(value), None if ttl is None else now + ttl),
            )

        await self._run(op)

    async def delete(self, key: str) -> None:
        def op(conn: sqlite3.Connection, now: float) -> None:
            conn.execute("DELETE FROM kv WHERE key = ?", (key,))

        await self._run(op)

    async def gcra(self, key: str, interval: float, burst: int, cost: int = 1) -> tuple[bool, float]:
        def op(conn: sqlite3.Connection, now: float) -> tuple[bool, float]:
            row = self._row(conn, key, now)
            tat = float(row[1]) / 1e6 if row is not None and row[1] is not None else None
            result = gcra(tat, now, interval, burst, cost)
            if result.allowed:  # TAT in integer microseconds; the row expires at the TAT
                conn.execute(
                    "INSERT INTO kv(key, num, expires) VALUES (?, ?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = NULL, num = excluded.num, "
                    "expires = excluded.expires",
                    (key, round(result.tat * 1e6), result.tat),
                )
            return result.allowed, result.retry_after

        return await self._run(op)

    # Prepaid credits: the statements of gateway.payments.ledger in this store's
    # BEGIN IMMEDIATE transaction (triggers keep the ledger append-only).
    async def _ledger_apply(self, account: str, delta: int, kind: str, ref: str, at: float) -> int | None:
        params = {"account": account, "delta": delta, "kind": kind, "ref": ref, "at": at}

        def op(conn: sqlite3.Connection, now: float) -> int | None:
            prior = conn.execute(LEDGER_REF_SQL, params).fetchone()
            if prior is not None:
                return int(prior[0])
            conn.execute(LEDGER_OP_SQL[0], params)
            row = conn.execute(LEDGER_OP_SQL[1], params).fetchone()
            if row is None:
                return None  # uncovered: nothing changed but an empty balance row
            conn.execute(LEDGER_OP_SQL[2], {**params, "balance": row[0], "seq": row[1]})
            return int(row[0])

        return await self._run(op)

    async def debit_ledger(self, account: str, amount: int, ref: str, at: float) -> int | None:
        if amount <= 0:
            raise ValueError("amount must be positive")
        return await self._ledger_apply(account, -amount, "debit", ref, at)

    async def credit_ledger(self, account: str, amount: int, kind: str, ref: str, at: float) -> int:
        if amount <= 0 or kind not in ("topup", "refund"):
            raise ValueError("positive amount and kind topup|refund required")
        result = await self._ledger_apply(account, amount, kind, ref, at)
        if result is None:
            raise RuntimeError(f"credit of {amount} to {account!r} refused")  # only debits can be
        return result

    async def ledger(self, account: str, since_seq: int = 0, limit: int = 1000) -> list[LedgerEntry]:
        def op(conn: sqlite3.Connection, now: float) -> list[LedgerEntry]:
            rows = conn.execute(LEDGER_SELECT_SQL, {"account": account, "since": since_seq, "limit": limit})
            return [LedgerEntry(*r) for r in rows]

        return await self._run(op)

    async def balance(self, account: str) -> int:
        def op(conn: sqlite3.Connection, now: float) -> int:
            row = conn.execute("SELECT balance FROM credit_balance WHERE account = ?", (account,)).fetchone()
            return int(row[0]) if row else 0

        return await self._run(op)

    async def ping(self) -> None:
        await self._run(lambda conn, now: conn.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._pool, shut)
        self._pool.shutdown(wait=True)
