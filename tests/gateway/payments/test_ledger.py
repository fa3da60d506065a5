"""Prepaid credits: API keys, and the debit+ledger semantics run three ways
(pure-Python model, the SQLite SQL, the Redis Lua on a real redis-server),
checked against each other and for reconciliation."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popgate.gateway.payments.ledger import (
    LEDGER_LUA,
    BadApiKey,
    LedgerEntry,
    LedgerModel,
    SqliteLedger,
    bearer_key,
    check_api_key,
    issue_api_key,
    key_id_of,
    reconcile,
    redis_keys,
)


def test_api_key_issue_and_check() -> None:
    """A key checks against its stored hash; its id is recoverable; others fail."""
    k = issue_api_key()
    assert k.key.startswith("pgk_") and key_id_of(k.key) == k.key_id
    check_api_key(k.key, k.key_hash)
    other = issue_api_key()
    for presented, stored in ((other.key, k.key_hash), (k.key, None), (k.key[:-1] + "x", k.key_hash)):
        with pytest.raises(BadApiKey):
            check_api_key(presented, stored)
    assert k.key not in repr(k.key_hash)


@pytest.mark.parametrize("value", ["pgk_short", "sk_0123456789abcdef_" + "a" * 43, ""])
def test_api_key_malformed(value: str) -> None:
    with pytest.raises(BadApiKey):
        key_id_of(value)


def test_bearer() -> None:
    k = issue_api_key().key
    assert bearer_key(f"Bearer {k}") == k and bearer_key(f"bearer  {k} ") == k
    assert bearer_key("PoP abc") is None and bearer_key(None) is None and bearer_key("Bearer jwt") is None


ops = st.lists(
    st.tuples(
        st.sampled_from(["debit", "topup", "refund"]),
        st.sampled_from(["a", "b"]),
        st.integers(1, 50),
        st.sampled_from(["", "r1", "r2", "r3"]),
    ),
    max_size=40,
)


def apply_all(ledger: Any, seq: list[tuple[str, str, int, str]]) -> list[int | None]:
    out: list[int | None] = []
    for i, (op, acct, amt, ref) in enumerate(seq):
        if op == "debit":
            out.append(ledger.debit_ledger(acct, amt, ref, float(i)))
        else:
            out.append(ledger.credit_ledger(acct, amt, op, ref, float(i)))
    return out


@given(ops)
def test_sqlite_matches_model(seq: list[tuple[str, str, int, str]]) -> None:
    """The SQLite transaction gives the model's results, balances and ledger."""
    model, sql = LedgerModel(), SqliteLedger(sqlite3.connect(":memory:"))
    assert apply_all(model, seq) == apply_all(sql, seq)
    for acct in ("a", "b"):
        assert sql.balance(acct) == model.balance(acct)
        assert sql.ledger(acct) == model.ledger(acct)
        reconcile(sql.balance(acct), sql.ledger(acct))


def test_sqlite_ledger_is_append_only() -> None:
    """UPDATE/DELETE on the ledger abort; balances cannot go negative."""
    conn = sqlite3.connect(":memory:")
    led = SqliteLedger(conn)
    led.credit_ledger("a", 10, "topup", "t1", 0.0)
    for stmt in ("UPDATE credit_ledger SET delta = 999", "DELETE FROM credit_ledger"):
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute(stmt)
    assert led.debit_ledger("a", 11, "", 1.0) is None and led.balance("a") == 10


def test_sqlite_concurrent_debits_never_overdraw(tmp_path: Any) -> None:
    """8 threads × 50 debits of 1 on a balance of 100 (own connections, one file):
    exactly 100 succeed and the ledger reconciles."""
    path = tmp_path / "c.db"
    SqliteLedger(sqlite3.connect(path)).credit_ledger("a", 100, "topup", "", 0.0)
    wins: list[int] = []

    def worker() -> None:
        led = SqliteLedger(sqlite3.connect(path, timeout=30))
        wins.extend(1 for _ in range(50) if led.debit_ledger("a", 1, "", 1.0) is not None)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    led = SqliteLedger(sqlite3.connect(path))
    assert len(wins) == 100 and led.balance("a") == 0
    reconcile(0, led.ledger("a"))


@given(ops)
def test_model_reconciles(seq: list[tuple[str, str, int, str]]) -> None:
    """After any sequence, each account's ledger explains its balance."""
    m = LedgerModel()
    apply_all(m, seq)
    for acct in ("a", "b"):
        reconcile(m.balance(acct), m.ledger(acct))


def test_idempotent_ref() -> None:
    """A retried debit with the same ref debits once and returns the same balance."""
    m = LedgerModel()
    m.credit_ledger("a", 10, "topup", "tx1", 0)
    assert m.credit_ledger("a", 10, "topup", "tx1", 0) == 10  # replayed top-up
    assert m.debit_ledger("a", 3, "req1", 1) == 7 == m.debit_ledger("a", 3, "req1", 2)
    assert len(m.ledger("a")) == 2


class RedisLedger:
    """Runs LEDGER_LUA through redis-py (sync) for the comparison test."""

    def __init__(self, client: Any, ns: str) -> None:
        self._script = client.register_script(LEDGER_LUA)
        self._c, self._ns = client, ns

    def _run(self, acct: str, delta: int, kind: str, ref: str, at: float) -> int | None:
        r = int(self._script(keys=redis_keys(self._ns + acct), args=[delta, kind, ref, at]))
        return None if r < 0 else r

    def debit_ledger(self, acct: str, amt: int, ref: str, at: float) -> int | None:
        return self._run(acct, -amt, "debit", ref, at)

    def credit_ledger(self, acct: str, amt: int, kind: str, ref: str, at: float) -> int:
        r = self._run(acct, amt, kind, ref, at)
        assert r is not None
        return r

    def balance(self, acct: str) -> int:
        return int(self._c.get(redis_keys(self._ns + acct)[0]) or 0)

    def ledger(self, acct: str) -> list[LedgerEntry]:
        out = []
        for sid, f in self._c.xrange(redis_keys(self._ns + acct)[1]):
            seq = int(sid.decode().split("-")[0])
            out.append(
                LedgerEntry(
                    seq,
                    acct,
                    int(f[b"delta"]),
                    int(f[b"bal"]),
                    f[b"kind"].decode(),
                    f[b"ref"].decode(),
                    float(f[b"at"]),
                )
            )
        return out


_counter = iter(range(10**9))


@settings(max_examples=30)
@given(ops)
def test_redis_lua_matches_model(redis_server_url: str, seq: list[tuple[str, str, int, str]]) -> None:
    """The Lua script on a real redis-server gives the model's results and ledger (each
    example in its own key namespace, so the shared server needs no flush)."""
    import redis

    client = redis.Redis.from_url(redis_server_url)
    try:
        ns = f"t{next(_counter)}-"
        model, lua = LedgerModel(), RedisLedger(client, ns)
        assert apply_all(model, seq) == apply_all(lua, seq)
        for acct in ("a", "b"):
            assert lua.balance(acct) == model.balance(acct)
            assert [(e.seq, e.delta, e.balance_after, e.kind, e.ref) for e in lua.ledger(acct)] == [
                (e.seq, e.delta, e.balance_after, e.kind, e.ref) for e in model.ledger(acct)
            ]
    finally:
        client.close()


def test_redis_concurrent_debits_never_overdraw(redis_url: str) -> None:
    """200 concurrent debits of 1 on a balance of 100: exactly 100 succeed."""
    import redis.asyncio as aredis

    async def main() -> tuple[int, int, int]:
        pool = aredis.BlockingConnectionPool.from_url(redis_url, max_connections=16)
        c = aredis.Redis(connection_pool=pool)
        script = c.register_script(LEDGER_LUA)
        keys = redis_keys(f"conc{next(_counter)}")
        await script(keys=keys, args=[100, "topup", "", 0])
        res = await asyncio.gather(*(script(keys=keys, args=[-1, "debit", "", 1]) for _ in range(200)))
        bal, n = int(await c.get(keys[0])), await c.xlen(keys[1])
        await c.aclose()
        await pool.disconnect()
        return sum(1 for r in res if int(r) >= 0), bal, n

    wins, bal, entries = asyncio.run(main())
    assert (wins, bal, entries) == (100, 0, 101)
