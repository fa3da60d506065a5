"""popgate against Redis Cluster semantics: a real one-node cluster rejects any multi-key
command or script whose keys are in different slots (CROSSSLOT), so every store operation
and every gateway feature that touches Redis is run against it here."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from popgate.gateway.stores.base import key
from popgate.gateway.stores.redis import RedisStore
from popgate.verifiers import hashcash
from tests.fleet.test_fleet import CHARGE_POLICY, PUZZLE, THROTTLE_POLICY, buy_session, solved_puzzle


async def test_store_operations_on_a_cluster_node(redis_cluster_url):
    """Every Store operation (spend-once, counters, debits, GCRA, the credits ledger's
    four-key script) runs on a cluster node without CROSSSLOT errors."""
    import redis.asyncio as aioredis

    raw = aioredis.from_url(redis_cluster_url)
    with pytest.raises(Exception, match="hash to the same slot"):  # the node really enforces slots
        await raw.mget("pg:{a:1}", "pg:{b:2}")
    await raw.aclose()
    store = RedisStore(redis_cluster_url)
    try:
        assert await store.claim(key("puzzle", "x"), 10) is True
        assert await store.claim(key("puzzle", "x"), 10) is False
        assert await store.incr(key("budget", "t"), 1, 10) == 1
        assert await store.credit(key("bal", "a"), 5) == 5
        assert await store.debit(key("bal", "a"), 3) == 2
        await store.set(key("kv", "k"), b"v", 10)
        assert await store.get(key("kv", "k")) == b"v"
        await store.delete(key("kv", "k"))
        assert (await store.gcra(key("gcra", "n"), 1.0, 1))[0] is True
        assert await store.credit_ledger("acct1", 100, "topup", "r1", time.time()) == 100
        assert await store.debit_ledger("acct1", 40, "r2", time.time()) == 60
        assert [e.kind for e in await store.ledger("acct1")] == ["topup", "debit"]
        assert await store.balance("acct1") == 60
    finally:
        await store.close()


async def test_gateway_features_on_a_cluster_node(fleet, redis_cluster_url, tmp_path):
    """Two gateways on the cluster node: puzzle session and its budget, puzzle replay, hashcash
    spend-once and credits debits all work (no CROSSSLOT becomes a 503)."""
    (tmp_path / "admin-token").write_text("f" * 40)
    extra = PUZZLE + f'[credits]\nadmin_token = {{ secret_file = "{tmp_path / "admin-token"}" }}\n'
    f = await fleet(2, extra=extra, store_url=redis_cluster_url)
    token = await buy_session(f, 0)
    statuses = [
        s
        for s, _ in await asyncio.gather(
            *(f.get(i % 2, "/hello", headers={"Authorization": f"PoP {token}"}) for i in range(9))
        )
    ]
    assert statuses.count(200) == 7 and 503 not in statuses, statuses
    solution = await solved_puzzle(f, 1)
    results = [await f.post(i, "/.well-known/popgate/puzzle", json={"solution": solution}) for i in (0, 1)]
    assert sorted(s for s, _ in results) == [200, 403]
    _, body = await f.get(0, "/", headers={"Accept": "application/json"})
    h = next(w for w in json.loads(body)["ways_out"] if w["kind"] == "hashcash")
    stamp, _ = hashcash.mint(h["resource"], h["bits"], time.time())
    assert [(await f.get(i, "/hello", headers={"X-Hashcash": stamp}))[0] for i in (0, 1)] == [200, 402]
    admin = {"Authorization": "Bearer " + "f" * 40}
    async with f.http.post(f.admin(0, "/admin/credits/keys"), json={"amount": 30_000}, headers=admin) as r:
        assert r.status == 201, await r.text()


async def test_rate_limit_and_charges_on_a_cluster_node(fleet, redis_cluster_url, tmp_path):
    """GCRA throttling and a credits-paid route on the cluster node."""
    f = await fleet(2, policy=THROTTLE_POLICY, store_url=redis_cluster_url)
    statuses = [s for s, _ in await asyncio.gather(*(f.get(i % 2, "/search") for i in range(8)))]
    assert statuses.count(200) == 5 and set(statuses) == {200, 429}, statuses
    (tmp_path / "admin-token").write_text("f" * 40)
    g = await fleet(
        2,
        policy=CHARGE_POLICY,
        store_url=redis_cluster_url,
        extra=f'[credits]\nadmin_token = {{ secret_file = "{tmp_path / "admin-token"}" }}\n',
    )
    admin = {"Authorization": "Bearer " + "f" * 40}
    async with g.http.post(g.admin(0, "/admin/credits/keys"), json={"amount": 20_000}, headers=admin) as r:
        created = await r.json()
    auth = {"Authorization": f"Bearer {created['api_key']}"}
    statuses = [
        s for s, _ in await asyncio.gather(*(g.get(i % 2, "/paid/x", headers=auth) for i in range(5)))
    ]
    assert statuses.count(200) == 2 and set(statuses) == {200, 402}, statuses
