"""GCRA: the pure math, the in-memory limiter, and the SQLite and Redis forms agree."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popgate.policies import ratelimit as rl
from popgate.policies.model import Rate


class Clock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_burst_then_steady_rate() -> None:
    """10/s with burst 4: 5 pass at once, the 6th waits 0.1 s; then one per 0.1 s."""
    clock = Clock()
    lim = rl.MemoryGCRA(clock)
    rate = Rate(10, 1.0, burst=4)
    got = [lim.hit("k", rate) for _ in range(6)]
    assert [r.allowed for r in got] == [True] * 5 + [False]
    assert [r.remaining for r in got[:5]] == [4, 3, 2, 1, 0]
    assert got[5].retry_after == pytest.approx(0.1)
    clock.t += 0.1
    assert lim.hit("k", rate).allowed and not lim.hit("k", rate).allowed
    clock.t += 10
    assert lim.hit("k", rate).remaining == 4


def test_keys_are_independent_and_per_network() -> None:
    lim = rl.MemoryGCRA(Clock())
    rate = Rate(1, 60.0)
    a, b = rl.network_key("203.0.113.5"), rl.network_key("203.0.113.200")
    assert a == b == "pg:{gcra:n:203.0.113.0/24}"
    assert (
        rl.network_key("2001:db8:0:1::1")
        == rl.network_key("2001:db8:0:1:ffff::9")
        != rl.network_key("2001:db8:0:2::1")
    )
    assert rl.network_key("10.1.2.3", v4_prefix=16) == "pg:{gcra:n:10.1.0.0/16}"
    assert lim.hit(a, rate).allowed and not lim.hit(b, rate).allowed
    assert lim.hit(rl.subject_key("alice"), rate).allowed


def test_memory_limiter_is_bounded() -> None:
    clock = Clock()
    lim = rl.MemoryGCRA(clock, max_keys=100)
    for i in range(1000):
        lim.hit(f"k{i}", Rate(1, 1.0))
        clock.t += 0.001
    assert len(lim) <= 100


@settings(max_examples=200)
@given(
    st.lists(st.floats(0, 2.0), min_size=1, max_size=60),
    st.integers(1, 20),
    st.integers(0, 5),
    st.floats(0.5, 10),
)
def test_never_more_than_the_rate_allows(gaps: list[float], count: int, burst: int, period: float) -> None:
    """Over any window the allowed count is at most burst + 1 + window / T."""
    rate = Rate(count, period, burst)
    t, tat, allowed = 0.0, None, []
    for g in gaps:
        t += g
        r = rl.gcra(tat, t, rate.interval, rate.burst)
        if r.allowed:
            tat = r.tat
            allowed.append(t)
        else:
            assert r.retry_after > 0 and r.remaining == 0
    for i, start in enumerate(allowed):
        n = sum(1 for x in allowed[i:] if x <= allowed[-1])
        assert n <= burst + 1 + (allowed[-1] - start) / rate.interval + 1e-6


@settings(max_examples=100)
@given(st.lists(st.tuples(st.floats(0, 1.0), st.integers(1, 3)), min_size=1, max_size=30))
def test_sqlite_matches_pure(steps: list[tuple[float, int]]) -> None:
    """The SQLite transaction gives the same decisions as the pure function."""
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(rl.SQLITE_GCRA_SCHEMA)
    rate = Rate(5, 1.0, 2)
    t, tat = 100.0, None
    for gap, cost in steps:
        t += gap
        want = rl.gcra(tat, t, rate.interval, rate.burst, cost)
        got = rl.sqlite_gcra(conn, "k", rate, t, cost)
        assert got == want
        tat = want.tat if want.allowed else tat
    assert not conn.in_transaction


def test_sqlite_inside_caller_transaction() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    conn.execute(rl.SQLITE_GCRA_SCHEMA)
    conn.execute("BEGIN")
    assert rl.sqlite_gcra(conn, "k", Rate(1, 1.0), 5.0).allowed
    assert conn.in_transaction
    conn.execute("COMMIT")
    assert not rl.sqlite_gcra(conn, "k", Rate(1, 1.0), 5.5).allowed


@pytest.fixture
async def redis_client(redis_url: str) -> AsyncIterator[Any]:
    """A client on the suite's real redis-server (tests/conftest.py), flushed first."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


async def test_redis_script_matches_pure(redis_client: Any) -> None:
    """The Lua script gives the pure function's decisions (microsecond integers) and sets a TTL."""
    rate = Rate(10, 1.0, burst=3)
    t, tat = 1_790_000_000.0, None
    for gap, cost in [(0, 1)] * 5 + [(0.05, 1), (0.1, 1), (0.35, 2), (0, 1), (2.0, 1), (0.01, 4)]:
        t += gap
        # the script works in integer microseconds: compare with the pure function in the same unit
        want = rl.gcra(tat, int(t * 1e6), 100_000, rate.burst, cost)
        got = await rl.redis_gcra(redis_client, "pg:{gcra:s:alice}", rate, t, cost)
        assert got.allowed == want.allowed and got.remaining == want.remaining
        assert got.tat * 1e6 == pytest.approx(want.tat, abs=1)
        assert got.retry_after * 1e6 == pytest.approx(want.retry_after, abs=1)
        tat = want.tat if want.allowed else tat
    assert 0 < await redis_client.pttl("pg:{gcra:s:alice}") <= 1000


async def test_redis_concurrent_hits_respect_burst(redis_client: Any) -> None:
    """50 concurrent hits at one instant: exactly burst + 1 pass."""
    rate = Rate(1, 60.0, burst=4)
    now = time.time()
    results = await asyncio.gather(
        *(rl.redis_gcra(redis_client, "pg:{gcra:n:x}", rate, now) for _ in range(50))
    )
    assert sum(r.allowed for r in results) == 5
