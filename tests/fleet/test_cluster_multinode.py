"""popgate on a REAL 3-master Redis Cluster (``redis+cluster://``): keys spread over the
masters, the client follows MOVED/ASK redirects (a live slot migration mid-test), scripts
are loaded on whichever node owns the key, and a fleet of gateway processes serves
budgeted sessions, puzzle spend-once and credits debits from it.

The cluster is tests.fleet.cluster_support (session-scoped, shared with tests/stores)."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import time

import pytest
import redis
from redis.cluster import key_slot
from redis.exceptions import MovedError

from popgate.gateway.ops.config import ConfigError, load_config
from popgate.gateway.payments.ledger import redis_keys
from popgate.gateway.schemes.worldid_roots import RedisSetRoots
from popgate.gateway.stores import open_store
from popgate.gateway.stores.base import StoreUnavailable, key
from popgate.gateway.stores.redis import CLAIM, RedisStore, parse_cluster_url
from tests.fleet.cluster_support import Cluster, start_cluster, stop_cluster
from tests.fleet.test_fleet import CHARGE_POLICY, PUZZLE, buy_session, solved_puzzle
from tests.support.servers import free_port, write_config

ADMIN_TOKEN = "f" * 40


def _node(cluster: Cluster, port: int) -> redis.Redis:
    return redis.Redis(port=port, socket_timeout=2)


def _owners(cluster: Cluster, keys: list[str]) -> dict[str, int]:
    """Key -> port of the master owning it, asked of the server (CLUSTER KEYSLOT)."""
    c = _node(cluster, cluster.ports[0])
    try:
        return {k: cluster.node_for_slot(int(c.execute_command("CLUSTER", "KEYSLOT", k))) for k in keys}
    finally:
        c.close()


def _keys_per_master(cluster: Cluster) -> dict[int, list[bytes]]:
    out = {}
    for port in cluster.ports:
        c = _node(cluster, port)
        out[port] = sorted(c.keys("pg:*"))
        c.close()
    return out


async def _store(cluster: Cluster, **kw) -> RedisStore:
    s = RedisStore(cluster.url, **kw)
    await s.client.flushdb(target_nodes=s.client.PRIMARIES)
    return s


def test_cluster_url_parsing_and_config_validation(tmp_path):
    nodes, opts = parse_cluster_url("rediss+cluster://u:p%40ss@a.example:7000,10.0.0.2:7001,[::1]:7002/0")
    assert nodes == [("a.example", 7000), ("10.0.0.2", 7001), ("::1", 7002)]
    assert opts == {"ssl": True, "username": "u", "password": "p@ss"}
    assert parse_cluster_url("redis+cluster://h/") == ([("h", 6379)], {"ssl": False})
    for bad in (
        "redis+cluster://h:1/3",
        "redis+cluster://h:99999/",
        "redis+cluster://h:1,/",
        "redis+cluster://h:1/?x=1",
        "redis://h:1/0",
    ):
        with pytest.raises(ValueError):
            parse_cluster_url(bad)
    ok = write_config(tmp_path, "http://127.0.0.1:1", store="redis+cluster://127.0.0.1:7000,127.0.0.1:7001/")
    assert load_config(ok).store.url.startswith("redis+cluster://")
    with pytest.raises(ConfigError, match="only database 0"):
        load_config(write_config(tmp_path, "http://127.0.0.1:1", store="redis+cluster://127.0.0.1:7000/2"))
    assert isinstance(open_store("redis+cluster://127.0.0.1:7000/"), RedisStore)


async def test_keys_spread_over_all_three_masters(redis_cluster3):
    """Hash tags put each logical key in its own slot: the store's keys land on every
    master, and each lives on exactly the node CLUSTER KEYSLOT names (a direct read of it
    elsewhere is MOVED)."""
    s = await _store(redis_cluster3)
    try:
        keys = []
        for i in range(6):
            assert await s.claim(key("puzzle", f"p{i}"), 30)
            assert await s.incr(key("budget", f"s{i}"), 1, 30) == 1
            assert await s.credit_ledger(f"key:a{i}", 10, "topup", "t", 1.0) == 10
            keys += [key("puzzle", f"p{i}"), key("budget", f"s{i}"), *redis_keys(f"key:a{i}")]
        owners = _owners(redis_cluster3, keys)
        assert set(owners.values()) == set(redis_cluster3.ports), owners  # all three masters used
        for i in range(6):  # the ledger's four keys share a slot, hence a node
            assert len({owners[k] for k in redis_keys(f"key:a{i}")}) == 1
        for k, port in owners.items():
            assert _node(redis_cluster3, port).exists(k) == 1, k
            other = next(p for p in redis_cluster3.ports if p != port)
            with pytest.raises(MovedError, match=f"127.0.0.1:{port}$"):
                _node(redis_cluster3, other).exists(k)
        per_master = _keys_per_master(redis_cluster3)
        assert all(per_master.values()), per_master
    finally:
        await s.close()


async def test_scripts_are_loaded_on_the_owning_node_after_script_flush(redis_cluster3):
    """An empty script cache (new or failed-over master, SCRIPT FLUSH) costs one EVAL on the
    node that owns the key; the script is then cached there for EVALSHA."""
    s = await _store(redis_cluster3)
    try:
        for port in redis_cluster3.ports:
            _node(redis_cluster3, port).script_flush()
        k = key("puzzle", "after-flush")
        owner = _owners(redis_cluster3, [k])[k]
        assert _node(redis_cluster3, owner).script_exists(s._claim.sha) == [False]
        assert await s.claim(k, 30) is True and await s.claim(k, 30) is False
        assert _node(redis_cluster3, owner).script_exists(s._claim.sha) == [True]
        assert s._claim.sha == hashlib.sha1(CLAIM.encode()).hexdigest()
        assert await s.debit_ledger("key:flushed", 1, "", 1.0) is None  # LEDGER_LUA too
    finally:
        await s.close()


def _same_slot_ident(kind: str, slot: int, avoid: set[str]) -> str:
    for i in itertools.count():
        ident = f"m{i}"
        if ident not in avoid and key_slot(f"{kind}:{ident}".encode()) == slot:
            return ident
    raise AssertionError


async def test_live_slot_migration_follows_ask_and_moved(redis_cluster3):
    """A slot holding a spent puzzle and a balance migrates to another master while the
    store runs: new keys follow ASK to the importing node mid-migration, old ones follow MOVED
    after it, and spend-once and the balance survive the move."""
    c = redis_cluster3
    s = await _store(c)
    spent = key("puzzle", "migrating")
    slot = key_slot(b"puzzle:migrating")
    bal = key("bal", _same_slot_ident("bal", slot, set()))  # another key in the same slot
    assert key_slot(bal.encode()) == slot
    src_port = c.node_for_slot(slot)
    dst_port = next(p for p in c.ports if p != src_port)
    src, dst = _node(c, src_port), _node(c, dst_port)
    try:
        assert await s.claim(spent, 60) is True
        assert await s.credit(bal, 10) == 10
        src_id, dst_id = src.execute_command("CLUSTER", "MYID"), dst.execute_command("CLUSTER", "MYID")
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", dst_id)
        # Mid-migration: a key absent on the source is redirected by ASK to the destination.
        fresh = key("puzzle", _same_slot_ident("puzzle", slot, {"migrating"}))
        assert await s.claim(fresh, 60) is True
        assert await s.claim(fresh, 60) is False
        assert dst.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
        assert await s.claim(spent, 60) is False  # still on the source
        src.execute_command("MIGRATE", "127.0.0.1", dst_port, "", 0, 5000, "KEYS", spent, bal)
        for port in c.ports:
            _node(c, port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", dst_id)
        assert c.node_for_slot(slot) == dst_port
        # After: the store's slot map is stale; MOVED sends it to the new owner.
        assert await s.claim(spent, 60) is False
        assert await s.claim(fresh, 60) is False
        assert await s.debit(bal, 4) == 6
        assert await s.gcra(key("gcra", "post-move"), 1.0, 0) == (True, 0.0)
        assert src.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
        # Leave the slot where it was for later tests' determinism.
        dst.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", src_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", dst_id)
        dst.execute_command("MIGRATE", "127.0.0.1", src_port, "", 0, 5000, "KEYS", spent, bal, fresh)
        for port in c.ports:
            _node(c, port).execute_command("CLUSTER", "SETSLOT", slot, "NODE", src_id)
    finally:
        await s.close()
        src.close()
        dst.close()


async def test_no_reachable_node_is_store_unavailable_at_once(redis_cluster3):
    """No reachable startup node: StoreUnavailable quickly. One dead startup node among
    live ones is skipped (any reachable node discovers the cluster)."""
    dead = RedisStore(f"redis+cluster://127.0.0.1:{free_port()},127.0.0.1:{free_port()}/", timeout=0.2)
    t = time.monotonic()
    with pytest.raises(StoreUnavailable):
        await dead.claim(key("t", "x"), 1)
    with pytest.raises(StoreUnavailable):
        await dead.ping()
    assert time.monotonic() - t < 5
    await dead.close()
    mixed = RedisStore(
        f"redis+cluster://127.0.0.1:{free_port()}," + redis_cluster3.url.split("//", 1)[1], timeout=0.3
    )
    try:
        assert await mixed.claim(key("t", "mixed"), 5) is True
        await mixed.ping()
    finally:
        await mixed.close()


async def test_a_down_master_fails_closed_and_the_store_recovers_when_it_returns():
    """Kill one master of a private 3-master cluster: operations on keys in its slots raise
    StoreUnavailable (fail closed, fast), so does ping (readiness checks every master);
    after it restarts with its nodes.conf the same store serves again, spends intact."""
    c = await asyncio.to_thread(start_cluster, 3)
    s = RedisStore(c.url, timeout=0.3)
    try:
        keys = [key("puzzle", f"o{i}") for i in range(12)]
        for k in keys:
            assert await s.claim(k, 60) is True
        owners = _owners(c, keys)
        victim = 1
        on_victim = [k for k in keys if owners[k] == c.ports[victim]]
        assert on_victim and len(on_victim) < len(keys)
        await asyncio.to_thread(c.kill, victim)
        t = time.monotonic()
        for k in on_victim:
            with pytest.raises(StoreUnavailable):
                await s.claim(k, 60)
        with pytest.raises(StoreUnavailable):
            await s.ping()
        assert time.monotonic() - t < 5
        await asyncio.to_thread(c.restart, victim)  # no persistence: its keys come back empty
        for _ in range(100):
            try:
                await s.ping()
                break
            except StoreUnavailable:
                await asyncio.sleep(0.05)
        for k in keys:
            assert await s.claim(k, 60) is (k in on_victim), k
    finally:
        await s.close()
        await asyncio.to_thread(stop_cluster, c)


async def test_worldid_redis_roots_read_from_the_cluster_client(redis_cluster3):
    """RedisSetRoots (the only user of ``RedisStore.client`` outside the store) works on the
    cluster client: SMEMBERS of one key, routed to its node."""
    s = await _store(redis_cluster3)
    try:
        await s.client.sadd("popgate:worldid:roots", "0x0abc", "17")
        roots = RedisSetRoots(s.client, "popgate:worldid:roots", 60)
        assert await roots.is_valid(0xABC, time.time()) and await roots.is_valid(17, time.time())
        assert not await roots.is_valid(18, time.time())
    finally:
        await s.close()


async def test_gateway_fleet_on_a_three_master_cluster(fleet, redis_cluster3, tmp_path):
    """Two gateway processes on ``redis+cluster://``: a puzzle-bought session's budget is
    counted fleet-wide, a puzzle solution is spent once, and credits debits are exactly-once;
    the keys they wrote are spread over the masters."""
    (tmp_path / "admin-token").write_text(ADMIN_TOKEN)
    credits = f'[credits]\nadmin_token = {{ secret_file = "{tmp_path / "admin-token"}" }}\n'
    f = await fleet(2, extra=PUZZLE + credits, store_url=redis_cluster3.url)
    tokens = await asyncio.gather(*(buy_session(f, i % 2) for i in range(6)))
    statuses = [
        s
        for s, _ in await asyncio.gather(
            *(f.get(i % 2, "/hello", headers={"Authorization": f"PoP {tokens[0]}"}) for i in range(9))
        )
    ]
    assert statuses.count(200) == 7 and 503 not in statuses, statuses  # session_budget = 7
    for t in tokens[1:]:
        assert (await f.get(1, "/hello", headers={"Authorization": f"PoP {t}"}))[0] == 200
    solution = await solved_puzzle(f, 1)
    results = await asyncio.gather(
        *(f.post(i % 2, "/.well-known/popgate/puzzle", json={"solution": solution}) for i in range(6))
    )
    assert sorted(s for s, _ in results) == [200] + [403] * 5, results
    spread = {p: ks for p, ks in _keys_per_master(redis_cluster3).items() if ks}
    # 6 budgets + 7 spent puzzles, random tags: all on one master has odds 3 * 3**-13
    assert len(spread) >= 2 and sum(map(len, spread.values())) == 13, spread
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    g = await fleet(2, policy=CHARGE_POLICY, extra=credits, store_url=redis_cluster3.url)
    accounts = []
    for amount in (20_000, 30_000):  # 2 and 3 paid requests of 0.01
        async with g.http.post(
            g.admin(0, "/admin/credits/keys"), json={"amount": amount}, headers=admin
        ) as r:
            assert r.status == 201, await r.text()
            accounts.append(await r.json())
    for created, want in zip(accounts, (2, 3)):
        auth = {"Authorization": f"Bearer {created['api_key']}"}
        statuses = [
            s for s, _ in await asyncio.gather(*(g.get(i % 2, "/paid/x", headers=auth) for i in range(6)))
        ]
        assert statuses.count(200) == want and set(statuses) == {200, 402}, statuses
        async with g.http.get(
            g.admin(1, f"/admin/credits/accounts/{created['account']}"), headers=admin
        ) as r:
            assert (await r.json())["balance"] == 0
    credit_keys = [k for ks in _keys_per_master(redis_cluster3).values() for k in ks if b"{credits:" in k]
    assert len(credit_keys) >= 8, credit_keys  # two accounts' balance, ledger, refs, seq
