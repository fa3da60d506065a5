"""Redis with Sentinel, for real: the master SIGKILLed three times under load.

A master, 2 replicas and 3 ``redis-sentinel`` processes on loopback
(tests/support/sentinel.py: AOF fsync always, min-replicas-to-write 1), two
``popgate`` processes on the same ``redis+sentinel://`` URL (so every write waits
for one replica: ``replica_acks`` 1), and a mixed load (tests/faults/failover_support.py):
credit debits, top-ups, hashcash stamps and puzzle solutions. Each cycle kills the
master, waits for Sentinel to promote a replica, restarts the old master and waits
until it streams from the new one as a replica; then every stamp and solution
served so far is sent again (a write acknowledged before the kill must have
survived it).
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from popgate.gateway.stores.base import StoreUnavailable, key
from popgate.gateway.stores.redis import RedisStore
from tests.faults.failover_support import Load, check_answers, check_ledger, two_gateways
from tests.support.sentinel import SentinelSet, sentinel_set

CYCLES = 3


async def test_gateways_follow_three_master_kills_without_double_spend_or_lost_ledger(
    upstream, http, tmp_path
):
    """SIGKILL the master 3 times under load: each time the gateways answer 503
    store_unavailable (never 500, never a free pass) until Sentinel promotes a
    replica, then serve again by themselves; no stamp or solution is served twice
    (not even after the failover), the ledger reconciles and holds every served
    debit and every acknowledged top-up. Unavailability is measured per kill."""
    with sentinel_set(replicas=2, sentinels=3) as ss:
        async with two_gateways(tmp_path, upstream, ss.url()) as gws:
            load = Load(http, gws)
            await load.open_account()
            tasks = load.run()
            gaps = []
            try:
                for _ in range(CYCLES):
                    await asyncio.sleep(1.5)  # load on a healthy master
                    old = ss.master_port()
                    assert old is not None
                    t_kill = time.monotonic()
                    ss.node(old).kill()
                    new = await asyncio.to_thread(ss.wait_promotion, old, 20.0)
                    t_promoted = time.monotonic() - t_kill
                    ss.node(old).start()  # its own config: comes back as a master, Sentinel demotes it
                    try:
                        await asyncio.to_thread(ss.wait_replicas, new, 2, 30.0)
                    except RuntimeError:  # Sentinel slow to demote it: what the operator would do
                        print("old master not demoted within 30 s: REPLICAOF by hand", flush=True)
                        ss.point_replicas_at(new)
                        await asyncio.to_thread(ss.wait_replicas, new, 2, 30.0)
                    t_rejoined = time.monotonic() - t_kill
                    first = load.first_success_after(t_kill)
                    assert first is not None, "no paid request served after the failover"
                    gaps.append((round(t_promoted, 2), round(first, 2), round(t_rejoined, 2)))
                    t0 = time.monotonic()
                    await load.replay()
                    print("cycle", gaps[-1], "replay", round(time.monotonic() - t0, 2), flush=True)
            finally:
                load.stop.set()
                await asyncio.gather(*tasks, return_exceptions=True)
            paid = check_answers(load)
            ledger = await check_ledger(load, ss.url())
    print(f"\nfailover (promoted s, first paid 200 s, old master rejoined s) per kill: {gaps}")
    print(f"paid statuses {dict(paid)}; ledger {ledger}; items served once: {len(load.served())}")
    assert paid[200] > 0 and paid[503] > 0, paid
    # The gap is Sentinel's promotion (2-3 s) on a quiet machine; on a loaded one the restarted
    # old master (no replicas: min-replicas-to-write refuses its writes) can hold it until
    # Sentinel demotes it (up to ~18 s seen). Still bounded, and fail closed throughout.
    assert all(first < 40 for _, first, _ in gaps), gaps
    assert len(load.served()) > 10


async def test_a_write_no_replica_acknowledges_is_not_acknowledged():
    """``replica_acks``: with the only replica frozen (SIGSTOP: its link stays up, it
    just does not answer), a claim is refused with StoreUnavailable (the gateway
    answers 503) rather than acknowledged on the master alone, which a failover
    could lose; once the replica answers again, writes succeed."""
    ss = SentinelSet(replicas=1, sentinels=1)
    try:
        ss.start()
        store = RedisStore(ss.url(), timeout=0.5)
        try:
            assert await store.claim(key("t", "before"), 60)
            replica = ss.data[1].proc
            assert replica is not None
            replica.send_signal(signal.SIGSTOP)
            try:
                with pytest.raises(StoreUnavailable, match="acknowledged by 0 of 1 replicas"):
                    await store.claim(key("t", "during"), 60)
            finally:
                replica.send_signal(signal.SIGCONT)
            await asyncio.to_thread(ss.wait_replicas, ss.data[0].port, 1, 10.0)
            assert await store.claim(key("t", "after"), 60)
        finally:
            await store.close()
    finally:
        ss.stop()
