"""Chain facts for World ID 4.0 over JSON-RPC (a local stand-in of the 4.0 contracts)
and from a file: validity window, caching, single flight, bounded staleness, fail closed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator

import aiohttp
import pytest

from popgate.gateway.errors import Overloaded
from popgate.gateway.schemes.worldid_chain import SEL, FileChain, RpcChain
from popgate.gateway.schemes.worldid_roots import rpc_call
from tests.support.servers import serve_app
from tests.support.worldid_chain import VERIFIER, V4ChainState, make_app

ISSUER, OPRF = (11, 12), (21, 22)


@contextlib.asynccontextmanager
async def chain_at() -> AsyncIterator[tuple[V4ChainState, RpcChain]]:
    state = V4ChainState(
        latest=100, stamps={90: 1000, 80: 500}, window=3600, issuer_keys={1: ISSUER}, oprf_keys={7: OPRF}
    )
    async with serve_app(make_app(state)) as port, aiohttp.ClientSession() as http:

        async def session() -> aiohttp.ClientSession:
            return http

        yield state, RpcChain(rpc_call(session, f"http://127.0.0.1:{port}/"), VERIFIER, 60)


async def test_facts_and_root_window():
    async with chain_at() as chain:
        await _test_facts_and_root_window(*chain)


async def _test_facts_and_root_window(state: V4ChainState, c: RpcChain) -> None:
    assert await c.root_valid(100, 5000)  # the latest root: always valid
    assert await c.root_valid(90, 1000 + 3600)  # recordedAt + window, inclusive (isValidRoot)
    assert not await c.root_valid(80, 1000 + 3600)  # recorded at 500: expired
    assert not await c.root_valid(12345, 5000)  # never recorded
    assert await c.issuer_key(1, 5000) == ISSUER and await c.issuer_key(2, 5000) is None
    assert await c.oprf_key(7, 5000) == OPRF and await c.oprf_key(8, 5000) is None  # the registry reverts
    assert await c.tree_depth(5000) == 30


async def test_cached_within_an_interval_and_single_flight():
    async with chain_at() as chain:
        await _test_cached_within_an_interval_and_single_flight(*chain)


async def _test_cached_within_an_interval_and_single_flight(state: V4ChainState, c: RpcChain) -> None:
    await asyncio.gather(
        *(c.issuer_key(1, 100) for _ in range(20)), *(c.root_valid(90, 100) for _ in range(5))
    )
    assert state.calls[SEL["issuerSchemaIdToPubkey(uint64)"]] == 1
    assert state.calls[SEL["getLatestRoot()"]] == 1 and state.calls[SEL["getRootTimestamp(uint256)"]] == 1
    state.issuer_keys[1] = (33, 44)  # rotated on chain
    assert await c.issuer_key(1, 159) == ISSUER  # within the interval: cached
    assert await c.issuer_key(1, 161) == (33, 44)  # refreshed after it
    for r in range(1000, 1040):  # random roots cost the chain at most 16 lookups per interval
        await c.root_valid(r, 161)
    assert state.calls[SEL["getRootTimestamp(uint256)"]] <= 17
    assert c.lookups == 16, c.lookups
    with pytest.raises(Overloaded):  # so do random schema ids (the budget is shared)
        await c.issuer_key(77, 161)
    assert await c.issuer_key(1, 200) == (33, 44)  # a known one still answers
    assert await c.issuer_key(77, 230) is None  # next interval: looked up


async def test_stale_then_fail_closed():
    async with chain_at() as chain:
        await _test_stale_then_fail_closed(*chain)


async def _test_stale_then_fail_closed(state: V4ChainState, c: RpcChain) -> None:
    assert await c.issuer_key(1, 0) == ISSUER
    state.down = True
    assert await c.issuer_key(1, 300) == ISSUER  # stale but within ten intervals
    with pytest.raises(Overloaded) as err:
        await c.issuer_key(1, 700)
    assert err.value.reason == "chain_unavailable" and err.value.retry_after == 60
    with pytest.raises(Overloaded):
        await c.oprf_key(7, 700)  # never fetched: no answer at all
    with pytest.raises(Overloaded):
        await c.root_valid(100, 700)  # the registry state is too old
    state.down = False
    assert await c.root_valid(100, 800) and await c.issuer_key(1, 800) == ISSUER


async def test_file_source(tmp_path):
    path = tmp_path / "chain.json"
    path.write_text(
        json.dumps({"valid_roots": ["0x05"], "issuer_keys": {"1": ["0xb", "0xc"]}, "oprf_keys": {}})
    )
    c = FileChain(str(path), 1)
    assert (
        await c.root_valid(5, 0) and await c.issuer_key(1, 0) == (11, 12) and await c.oprf_key(7, 0) is None
    )
    path.write_text(json.dumps({"valid_roots": ["0x06"], "oprf_keys": {"7": ["0x15", "0x16"]}}))
    os.utime(path, (1, 1))
    assert await c.root_valid(6, 2) and not await c.root_valid(5, 2) and await c.oprf_key(7, 2) == (21, 22)
    path.write_text("not json")
    os.utime(path, (2, 2))
    assert await c.root_valid(6, 4)  # a bad file keeps the last good facts...
    with pytest.raises(Overloaded):
        await c.root_valid(6, 20)  # ...for ten intervals
