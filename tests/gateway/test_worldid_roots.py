"""Root sources: static, file (mtime), Redis set, JSON-RPC identity manager."""

from __future__ import annotations

import os
import time

import aiohttp
import redis.asyncio as aioredis

from gateway.roots import FileRoots, RedisSetRoots, RpcRoots, rpc_caller, selector
from tests.conftest import url_of
from tests.gateway.test_worldid_gateway import post
from tests.gateway.worldid_support import ROOT, body, forget_nullifiers, worldid_toml
from tests.support import jsonrpc
from tests.support.servers import serve_app

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
    state = jsonrpc.ChainState(CONTRACT, latest=7, history={R: int(now) - 600, 99: int(now) - 7200},
                               expiry=3600)
    async with serve_app(jsonrpc.make_app(state)) as port, aiohttp.ClientSession() as http:
        async def session():
            return http
        src = RpcRoots(rpc_caller(session, f"http://127.0.0.1:{port}/"), CONTRACT, interval=30)
        assert await src.is_valid(7, now)
        assert await src.is_valid(R, now)            # superseded 10 min ago, 1 h window
        assert not await src.is_valid(99, now)       # superseded 2 h ago: expired
        assert not await src.is_valid(12345, now)    # never a root
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
        roots = (f'source = "rpc"\nrpc_url = "http://127.0.0.1:{port}/"\ncontract = "{CONTRACT}"\n'
                 'poll_interval = 30\n')
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
    gw = await gateway_factory(upstream, store=redis_url, extra=worldid_toml(
        roots=roots, action="vote"))
    status, data, _ = await post(http, gw, body(2))
    assert status == 200, data
    async with http.get(url_of(gw, "/x"), headers={"Authorization": f"PoP {data['token']}"}) as r:
        assert (await r.json())["pop"]["PoP-Class"] == "human"
