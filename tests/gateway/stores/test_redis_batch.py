"""Group commit (gateway.stores.redis_batch) on a real redis-server: calls made
together share a round trip and each gets its own result; a flushed script
cache and a dead server behave as when each call is sent alone."""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from popgate.gateway.stores.base import StoreUnavailable, key
from popgate.gateway.stores.redis import RedisStore
from tests.support.servers import redis_server


async def test_concurrent_calls_share_round_trips_and_keep_their_results(redis_url: str) -> None:
    store = RedisStore(redis_url, timeout=5.0)
    try:
        before = store.group.round_trips
        got = await asyncio.gather(*(store.incr(key("t", f"c{i % 7}"), i, 60) for i in range(200)))
        # each counter saw its own increments, in the order they were made
        for c in range(7):
            mine = [i for i in range(200) if i % 7 == c]
            assert [got[i] for i in mine] == [sum(mine[: n + 1]) for n in range(len(mine))]
        assert store.group.round_trips - before <= 4  # 200 calls, a handful of pipelines
        assert await store.incr(key("t", "alone"), 5, 60) == 5
    finally:
        await store.close()


async def test_a_flushed_script_cache_is_reloaded(redis_url: str) -> None:
    store = RedisStore(redis_url, timeout=5.0)
    try:
        assert await store.incr(key("t", "n"), 1, 60) == 1
        await store.client.script_flush()
        got = await asyncio.gather(*(store.incr(key("t", "n"), 1, 60) for _ in range(10)))
        assert sorted(got) == list(range(2, 12))
    finally:
        await store.close()


async def test_a_dead_server_fails_every_caller_closed() -> None:
    with redis_server() as (url, proc):
        store = RedisStore(url, timeout=0.5)
        assert await store.incr(key("t", "x"), 1, 60) == 1
        proc.terminate()
        proc.wait(10)
        results = await asyncio.gather(
            *(store.incr(key("t", "x"), 1, 60) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        with pytest.raises(StoreUnavailable):
            await store.incr(key("t", "x"), 1, 60)
        await store.close()


async def test_a_queued_tally_goes_out_before_any_later_call(redis_url: str) -> None:
    """incr_soon does not wait, yet every call made after it sees it."""
    store = RedisStore(redis_url, timeout=5.0)
    try:
        queued = [store.incr_soon(key("t", "spent"), 5, 60) for _ in range(3)]
        assert all(q is not None for q in queued)
        assert await store.incr(key("t", "spent"), 1, 60) == 16
        assert [await q for q in queued if q is not None] == [5, 10, 15]
    finally:
        await store.close()


async def test_one_failing_call_does_not_fail_its_batch(redis_url: str) -> None:
    store = RedisStore(redis_url, timeout=5.0)
    try:
        await store.set(key("t", "text"), b"not a number")
        got = await asyncio.gather(
            store.incr(key("t", "a"), 1, 60),
            store.incr(key("t", "text"), 1, 60),
            store.incr(key("t", "a"), 1, 60),
            return_exceptions=True,
        )
        assert got[0] == 1 and got[2] == 2 and isinstance(got[1], StoreUnavailable)
        assert await store.incr(key("t", "a"), 1, 60) == 3  # the connection is still in step
    finally:
        await store.close()


async def test_a_server_that_stops_answering_fails_the_batch_within_its_deadline() -> None:
    """One deadline (the store's timeout) covers a batch's write and every reply:
    a server that takes the calls and then says nothing fails them all closed in
    about that time; once it answers again, so does the store (a new connection)."""
    with redis_server() as (url, proc):
        store = RedisStore(url, timeout=0.3)
        try:
            assert await store.incr(key("t", "x"), 1, 60) == 1
            proc.send_signal(signal.SIGSTOP)
            t0 = time.monotonic()
            results = await asyncio.gather(
                *(store.incr(key("t", "x"), 1, 60) for _ in range(5)), return_exceptions=True
            )
            assert all(isinstance(r, StoreUnavailable) for r in results), results
            assert time.monotonic() - t0 < 1.5
            proc.send_signal(signal.SIGCONT)
            assert await store.incr(key("t", "x"), 1, 60) >= 2  # the stopped calls may have run
        finally:
            proc.send_signal(signal.SIGCONT)
            await store.close()
