"""One contract, five backends: memory, SQLite, a real redis-server, a real
3-master Redis Cluster and a real Sentinel-watched master with a replica (every
write waits for the replica: ``replica_acks`` 1)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from popgate.gateway.stores import open_store
from popgate.gateway.stores.base import Store, StoreUnavailable, key
from popgate.gateway.stores.memory import MemoryStore
from popgate.gateway.stores.redis import RedisStore
from popgate.gateway.stores.sqlite import SQLiteStore
from tests.support.servers import free_port, redis_server


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster", "redis-sentinel"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, redis_url: str) -> AsyncIterator[Store]:
    if request.param == "memory":
        s: Store = MemoryStore()
    elif request.param == "sqlite":
        s = SQLiteStore(str(tmp_path / "store.db"))
    elif request.param == "redis-cluster":  # a real 3-master cluster (tests/fleet/cluster_support.py)
        s = RedisStore(request.getfixturevalue("redis_cluster3").url)
        await s.client.flushdb(target_nodes=s.client.PRIMARIES)
    elif request.param == "redis-sentinel":  # tests/support/sentinel.py
        s = RedisStore(request.getfixturevalue("redis_sentinel").url())
        await s.client.flushdb()
    else:
        s = RedisStore(redis_url)
        await s.client.flushdb()
    yield s
    await s.close()


async def test_claim_is_spend_once(store):
    """The first claim of a key wins; later ones lose until it expires."""
    k = key("t", "once")
    assert await store.claim(k, ttl=30) is True
    assert await store.claim(k, ttl=30) is False
    assert await store.claim(key("t", "other"), ttl=30) is True


async def test_concurrent_claims_exactly_one_wins(store):
    """50 concurrent claims of one key: exactly one True."""
    k = key("t", "race")
    results = await asyncio.gather(*(store.claim(k, ttl=30) for _ in range(50)))
    assert results.count(True) == 1


async def test_claim_with_limit(store):
    """limit=3 admits three uses, refuses the fourth; refused claims do not count."""
    k = key("t", "limit")
    got = [await store.claim(k, ttl=30, limit=3) for _ in range(6)]
    assert got == [True, True, True, False, False, False]
    assert await store.claim(k, ttl=30, limit=4) is True


async def test_claim_expires(store):
    """After its TTL a claimed key can be claimed again."""
    k = key("t", "ttl")
    assert await store.claim(k, ttl=0.3)
    assert not await store.claim(k, ttl=0.3)
    await asyncio.sleep(0.45)
    assert await store.claim(k, ttl=0.3)


async def test_windowed_counter(store):
    """incr adds within a window and restarts after it."""
    k = key("t", "ctr")
    assert await store.incr(k, 1, window=0.4) == 1
    assert await store.incr(k, 5, window=0.4) == 6
    await asyncio.sleep(0.55)
    assert await store.incr(k, 2, window=0.4) == 2


async def test_debit_never_below_zero(store):
    """debit takes only what is there; a short balance is left untouched."""
    k = key("t", "bal")
    assert await store.debit(k, 1) is None
    assert await store.credit(k, 10) == 10
    assert await store.debit(k, 4) == 6
    assert await store.debit(k, 7) is None
    assert await store.debit(k, 6) == 0
    assert await store.debit(k, 1) is None


async def test_concurrent_debits_never_overdraw(store):
    """100 concurrent debits of 1 against a balance of 37: exactly 37 succeed."""
    k = key("t", "race-bal")
    await store.credit(k, 37)
    results = await asyncio.gather(*(store.debit(k, 1) for _ in range(100)))
    assert sum(r is not None for r in results) == 37
    assert await store.debit(k, 1) is None


async def test_get_set_delete_ttl(store):
    k = key("t", "kv")
    assert await store.get(k) is None
    await store.set(k, b"\x00value")
    assert await store.get(k) == b"\x00value"
    await store.set(k, b"short", ttl=0.3)
    assert await store.get(k) == b"short"
    await asyncio.sleep(0.45)
    assert await store.get(k) is None
    await store.set(k, b"x")
    await store.delete(k)
    assert await store.get(k) is None
    await store.ping()


async def test_sqlite_is_durable_across_reopen(tmp_path):
    """Spent keys and balances survive closing and reopening the file."""
    path = str(tmp_path / "d.db")
    s = SQLiteStore(path)
    await s.claim(key("t", "d"), ttl=60)
    await s.credit(key("t", "b"), 5)
    await s.close()
    s2 = open_store(f"sqlite:///{path}")
    assert await s2.claim(key("t", "d"), ttl=60) is False
    assert await s2.debit(key("t", "b"), 5) == 0
    await s2.close()


async def test_sqlite_two_handles_one_file_exactly_once(tmp_path):
    """Two store instances on one file (two workers on one host) still spend once."""
    path = str(tmp_path / "shared.db")
    a, b = SQLiteStore(path), SQLiteStore(path)
    k = key("t", "shared")
    results = await asyncio.gather(*[s.claim(k, ttl=60) for s in (a, b) for _ in range(20)])
    assert results.count(True) == 1
    await a.close()
    await b.close()


async def test_redis_down_raises_store_unavailable():
    """A dead Redis answers StoreUnavailable within the timeout, not a hang."""
    s = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(s.claim(key("t", "x"), ttl=1), 5)
    await s.close()


async def test_redis_restart_keeps_working():
    """After the server is killed and restarted on its port, the client reconnects."""
    with redis_server() as (url, proc):
        s = RedisStore(url, timeout=0.3)
        assert await s.claim(key("t", "a"), ttl=60)
        port = url.rsplit(":", 1)[1].split("/")[0]
        proc.kill()
        proc.wait()
        with pytest.raises(StoreUnavailable):
            await s.claim(key("t", "b"), ttl=60)
        restarted = subprocess.Popen(
            ["redis-server", "--port", port, "--bind", "127.0.0.1", "--save", ""], stdout=subprocess.DEVNULL
        )
        try:
            for _ in range(50):
                try:
                    await s.ping()
                    break
                except StoreUnavailable:
                    await asyncio.sleep(0.1)
            assert await s.claim(key("t", "b"), ttl=60)
        finally:
            await s.close()
            restarted.terminate()
            restarted.wait(10)


def test_keys_carry_hash_tags():
    """Every key is one hash-tagged slot: safe on Redis Cluster."""
    assert key("nullifier", "0xab") == "pg:{nullifier:0xab}"


async def test_gcra_allows_burst_then_refuses_with_retry_after(store):
    """GCRA: burst+1 requests pass at once, the next is refused with a retry-after near T."""
    k = key("gcra", "burst")
    got = [await store.gcra(k, interval=10.0, burst=2) for _ in range(4)]
    assert [a for a, _ in got] == [True, True, True, False]
    assert all(r == 0.0 for _, r in got[:3])
    assert 9.0 < got[3][1] <= 10.0


async def test_gcra_refusals_do_not_count_and_tokens_come_back(store):
    """A refused request changes nothing; after one interval one more request passes."""
    k = key("gcra", "refill")
    assert (await store.gcra(k, interval=0.3, burst=0))[0]
    assert not (await store.gcra(k, interval=0.3, burst=0))[0]
    assert not (await store.gcra(k, interval=0.3, burst=0))[0]
    await asyncio.sleep(0.35)
    assert (await store.gcra(k, interval=0.3, burst=0))[0]
    assert not (await store.gcra(k, interval=0.3, burst=0))[0]


async def test_gcra_cost_and_keys_independent(store):
    """A request of cost 3 uses three cells; other keys are unaffected."""
    k = key("gcra", "cost")
    assert (await store.gcra(k, interval=5.0, burst=3, cost=3))[0]
    allowed, retry = await store.gcra(k, interval=5.0, burst=3, cost=2)
    assert not allowed and 4.0 < retry <= 5.0
    assert (await store.gcra(k, interval=5.0, burst=3, cost=1))[0]
    assert (await store.gcra(key("gcra", "other"), interval=5.0, burst=0))[0]


async def test_gcra_concurrent_requests_admit_exactly_burst_plus_one(store):
    """40 concurrent requests against burst 4: exactly 5 pass (atomic across callers)."""
    k = key("gcra", "race")
    results = await asyncio.gather(*(store.gcra(k, interval=60.0, burst=4) for _ in range(40)))
    assert sum(1 for a, _ in results if a) == 5


# --- prepaid credits ledger (gateway.payments.ledger): same semantics on every backend ---


async def test_ledger_debit_credit_and_reconcile(store):
    """Top-up, debits, a short debit (refused, nothing appended), a refund: the
    ledger is gap-free and sums to the balance."""
    from popgate.gateway.payments.ledger import reconcile

    acct = "key:contract1"
    assert await store.balance(acct) == 0
    assert await store.debit_ledger(acct, 5, "r0", 1.0) is None
    assert await store.credit_ledger(acct, 100, "topup", "t1", 2.0) == 100
    assert await store.debit_ledger(acct, 30, "r1", 3.0) == 70
    assert await store.debit_ledger(acct, 71, "r2", 4.0) is None
    assert await store.credit_ledger(acct, 30, "refund", "refund:r1", 5.0) == 100
    entries = await store.ledger(acct)
    assert [(e.seq, e.delta, e.balance_after, e.kind, e.ref) for e in entries] == [
        (1, 100, 100, "topup", "t1"),
        (2, -30, 70, "debit", "r1"),
        (3, 30, 100, "refund", "refund:r1"),
    ]
    assert entries[1].at == 3.0 and entries[0].account == acct
    reconcile(await store.balance(acct), entries)
    assert [e.seq for e in await store.ledger(acct, since_seq=1, limit=1)] == [2]


async def test_ledger_refs_are_idempotent(store):
    """A repeated ref changes nothing and returns the balance after the original."""
    acct = "key:contract2"
    assert await store.credit_ledger(acct, 50, "topup", "x402:tx1", 1.0) == 50
    assert await store.credit_ledger(acct, 50, "topup", "x402:tx1", 2.0) == 50
    assert await store.debit_ledger(acct, 10, "req1", 3.0) == 40
    assert await store.debit_ledger(acct, 10, "req1", 4.0) == 40
    assert await store.debit_ledger(acct, 10, "", 5.0) == 30
    assert await store.debit_ledger(acct, 10, "", 6.0) == 20  # empty ref: never deduplicated
    assert len(await store.ledger(acct)) == 4
    assert await store.balance(acct) == 20


async def test_ledger_rejects_bad_input(store):
    with pytest.raises(ValueError):
        await store.debit_ledger("key:c3", 0, "", 1.0)
    with pytest.raises(ValueError):
        await store.credit_ledger("key:c3", 5, "gift", "", 1.0)
    with pytest.raises(ValueError):
        await store.credit_ledger("key:c3", -5, "topup", "", 1.0)


async def test_ledger_concurrent_debits_never_overdraw_and_reconcile(store):
    """200 concurrent debits of 3 against 100 with interleaved top-ups: never an
    overdraft, and the ledger explains the balance exactly."""
    from popgate.gateway.payments.ledger import LedgerModel, reconcile

    acct = "key:race"
    await store.credit_ledger(acct, 100, "topup", "seed", 0.0)
    ops = [store.debit_ledger(acct, 3, f"d{i}", float(i)) for i in range(200)]
    ops += [store.credit_ledger(acct, 10, "topup", f"t{i}", float(i)) for i in range(5)]
    results = await asyncio.gather(*ops)
    ok = sum(1 for r in results[:200] if r is not None)
    assert 100 // 3 <= ok <= 150 // 3
    bal = await store.balance(acct)
    assert bal == 150 - 3 * ok
    entries = await store.ledger(acct, limit=10_000)
    reconcile(bal, entries)
    model = LedgerModel()  # the same sequence replayed on the reference model agrees
    for e in entries:
        got = (
            model.debit_ledger(acct, -e.delta, e.ref, e.at)
            if e.delta < 0
            else model.credit_ledger(acct, e.delta, e.kind, e.ref, e.at)
        )
        assert got == e.balance_after


async def test_ledger_accounts_are_independent(store):
    await store.credit_ledger("key:a", 5, "topup", "", 1.0)
    assert await store.debit_ledger("key:b", 1, "", 1.0) is None
    assert await store.balance("key:a") == 5 and await store.ledger("key:b") == []


async def test_sqlite_ledger_is_append_only_and_durable(tmp_path):
    """The ledger survives reopening; UPDATE/DELETE on it are refused by triggers."""
    import sqlite3

    path = str(tmp_path / "l.db")
    s = SQLiteStore(path)
    await s.credit_ledger("key:d", 9, "topup", "t", 1.0)
    await s.close()
    s2 = SQLiteStore(path)
    assert await s2.debit_ledger("key:d", 4, "d", 2.0) == 5
    await s2.close()
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute("UPDATE credit_ledger SET delta = 0")
    with pytest.raises(sqlite3.DatabaseError):
        conn.execute("DELETE FROM credit_ledger")
    conn.close()
