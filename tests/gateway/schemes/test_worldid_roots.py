"""Root sources: static, file (mtime), Redis set, JSON-RPC identity manager."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
import pytest
import redis.asyncio as aioredis

from popgate.gateway.errors import Overloaded
from popgate.gateway.schemes.worldid_roots import FileRoots, RedisSetRoots, RpcRoots, rpc_call, selector
from tests.conftest import url_of
from tests.gateway.schemes.test_worldid import post
from tests.gateway.schemes.worldid_support import ROOT, body, forget_nullifiers, worldid_toml
from tests.support import jsonrpc
from tests.support.servers import free_port, serve_app

CONTRACT = "0x" + "ab" * 20
R = int(ROOT, 16)


def test_selectors_are_keccak_of_signatures():
    assert selector("latestRoot()") == "0xd7b0fef1"
    assert selector("transfer(address,uint256)") == "0xa9059cbb"  # the well-known one


async def test_file_source_follows_mtime(tmp_path):
    path = tmp_path / "roots"
    path.write_text("# roots\n0x01\n")
    src = FileRoots(str(path), interval=0.05)
    now = time.time()
    assert await src.is_valid(1, now) and not await src.is_valid(R, now)
    path.write_text(f"0x01\n{ROOT}  # new root\n")
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert not await src.is_valid(R, now + 0.01), "re-read at most once per interval"
    assert await src.is_valid(R, now + 0.1)


async def test_redis_set_source(redis_url):
    client = aioredis.from_url(redis_url)
    try:
        await client.delete("test:roots")
        await client.sadd("test:roots", ROOT)
        src = RedisSetRoots(client, "test:roots", interval=60)
        now = time.time()
        assert await src.is_valid(R, now) and not await src.is_valid(R + 1, now)
        await client.sadd("test:roots", str(R + 1))
        assert await src.is_valid(R + 1, now + 61)
    finally:
        await client.aclose()


async def test_rpc_source_latest_history_and_expiry():
    """latestRoot is valid; an older root while rootHistory(root) + expiry >= now;
    unknown roots are looked up once and cached."""
    now = time.time()
    state = jsonrpc.ChainState(
        CONTRACT, latest=7, history={R: int(now) - 600, 99: int(now) - 7200}, expiry=3600
    )
    async with serve_app(jsonrpc.make_app(state)) as port, aiohttp.ClientSession() as http:

        async def session():
            return http

        src = RpcRoots(rpc_call(session, f"http://127.0.0.1:{port}/"), CONTRACT, interval=30)
        assert await src.is_valid(7, now)
        assert await src.is_valid(R, now)  # superseded 10 min ago, 1 h window
        assert not await src.is_valid(99, now)  # superseded 2 h ago: expired
        assert not await src.is_valid(12345, now)  # never a root
        for _ in range(5):
            assert not await src.is_valid(12345, now)
        assert state.calls[jsonrpc.ROOT_HISTORY] == 3, "each unknown root looked up once"
        assert state.calls[jsonrpc.LATEST_ROOT] == 1
        state.latest = 8
        assert await src.is_valid(8, now + 31) and await src.is_valid(7, now + 31)
        assert not await src.is_valid(7, now + 31 + 3601), "the old latest expires"


async def test_gateway_with_rpc_roots(upstream, gateway_factory, http):
    """End to end: the gateway asks the (local) chain whether the proof's root is valid."""
    now = int(time.time())
    state = jsonrpc.ChainState(CONTRACT, latest=5, history={R: now - 60}, expiry=3600)
    async with serve_app(jsonrpc.make_app(state)) as port:
        roots = (
            f'source = "rpc"\nrpc_url = "http://127.0.0.1:{port}/"\ncontract = "{CONTRACT}"\n'
            "poll_interval = 30\n"
        )
        gw = await gateway_factory(upstream, extra=worldid_toml(roots=roots))
        status, data, _ = await post(http, gw, body(0))
        assert status == 200, data
        state.history[R] = now - 7200  # expired (a fresh gateway would look it up again)
        gw2 = await gateway_factory(upstream, extra=worldid_toml(roots=roots))
        status, data, _ = await post(http, gw2, body(1))
        assert (status, data["reason"]) == (401, "unknown_root")


async def test_gateway_with_redis_set_roots(upstream, gateway_factory, http, redis_url):
    client = aioredis.from_url(redis_url)
    await client.delete("wid:roots")
    await client.sadd("wid:roots", ROOT)
    await client.aclose()
    await forget_nullifiers(redis_url)
    roots = 'source = "redis"\nredis_key = "wid:roots"\n'
    gw = await gateway_factory(upstream, store=redis_url, extra=worldid_toml(roots=roots, action="vote"))
    status, data, _ = await post(http, gw, body(2))
    assert status == 200, data
    async with http.get(url_of(gw, "/x"), headers={"Authorization": f"PoP {data['token']}"}) as r:
        assert (await r.json())["pop"]["PoP-Class"] == "human"


async def test_rpc_source_asks_again_about_a_root_it_did_not_know():
    """A root the chain did not know (newer than the last ``latestRoot``, say)
    is refused for one interval, then asked about again."""
    now = time.time()
    state = jsonrpc.ChainState(CONTRACT, latest=7, expiry=3600)
    async with serve_app(jsonrpc.make_app(state)) as port, aiohttp.ClientSession() as http:

        async def session():
            return http

        src = RpcRoots(rpc_call(session, f"http://127.0.0.1:{port}/"), CONTRACT, interval=30)
        assert not await src.is_valid(R, now)
        state.history[R] = int(now) + 5  # superseded on chain a moment later
        assert not await src.is_valid(R, now + 10), "within the interval: the cached answer"
        assert state.calls[jsonrpc.ROOT_HISTORY] == 1
        assert await src.is_valid(R, now + 31)
        assert state.calls[jsonrpc.ROOT_HISTORY] == 2


async def test_rpc_source_unreachable_chain_is_roots_unavailable_not_unknown_root():
    """Chain gone: the last latestRoot is served for up to ten intervals; a
    lookup the chain cannot answer, and no fresh data after that, are
    ``roots_unavailable`` (503 with Retry-After), never a verdict on the root."""
    now = time.time()
    state = jsonrpc.ChainState(CONTRACT, latest=7, history={R: int(now) - 60}, expiry=3600)
    port = free_port()
    async with aiohttp.ClientSession() as http:

        async def session():
            return http

        src = RpcRoots(rpc_call(session, f"http://127.0.0.1:{port}/"), CONTRACT, interval=30)
        with pytest.raises(Overloaded) as down:
            await src.is_valid(7, now)
        assert down.value.reason == "roots_unavailable" and down.value.retry_after == 30
        async with serve_app(jsonrpc.make_app(state), port=port):
            with pytest.raises(Overloaded):  # tried < an interval ago: not asked again yet
                await src.is_valid(7, now + 1)
            assert await src.is_valid(7, now + 31)
        # the node is gone again
        assert await src.is_valid(7, now + 31 + 60), "last good latestRoot, within 10 intervals"
        with pytest.raises(Overloaded) as lookup:
            await src.is_valid(R, now + 31 + 60)
        assert lookup.value.reason == "roots_unavailable"
        with pytest.raises(Overloaded):
            await src.is_valid(7, now + 31 + 301)


async def test_gateway_with_rpc_roots_down_then_up(upstream, gateway_factory, http):
    """End to end: the chain's node is unreachable → 503 ``roots_unavailable``
    with Retry-After (no 500, no 401 for a root nobody could check), and
    session-holding requests are still served; the node comes back → 200."""
    state = jsonrpc.ChainState(CONTRACT, latest=R, expiry=3600)
    port = free_port()
    roots = (
        f'source = "rpc"\nrpc_url = "http://127.0.0.1:{port}/"\ncontract = "{CONTRACT}"\npoll_interval = 1\n'
    )
    gw = await gateway_factory(upstream, extra=worldid_toml(roots=roots))
    status, data, headers = await post(http, gw, body(0))
    assert (status, data["reason"]) == (503, "roots_unavailable"), data
    assert int(headers["Retry-After"]) >= 1
    async with serve_app(jsonrpc.make_app(state), port=port):
        await asyncio.sleep(1.1)  # one poll interval
        status, data, _ = await post(http, gw, body(0))
        assert status == 200, data
        token = data["token"]
    async with http.get(url_of(gw, "/x"), headers={"Authorization": f"PoP {token}"}) as r:
        assert r.status == 200
    assert state.calls[jsonrpc.LATEST_ROOT] >= 1
