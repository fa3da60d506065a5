"""A flood of proofs never stalls the event loop: sessions keep being served,
and a full verification pool answers 503 + Retry-After instead of queueing."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp

from tests.conftest import session_token, url_of
from tests.gateway.schemes.worldid_support import ENDPOINT, body, worldid_toml


async def test_flood_of_proofs_does_not_stall_sessions(upstream, gateway_factory):
    gw = await gateway_factory(upstream, extra=worldid_toml(workers=1, queue_limit=4, gate_rate=100000))
    token = session_token(gw, "human")
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn, cookie_jar=aiohttp.DummyCookieJar()) as http:
        statuses: dict[int, int] = {}
        retry_after: set[str] = set()

        async def attack(i: int) -> None:
            if i % 3 == 0:  # valid-looking: real curve points, valid root, wrong signal
                payload: object = {"result": body(0)["result"], "signal": f"flood-{i}"}
            elif i % 3 == 1:  # garbage proof words
                payload = {"result": {**body(0)["result"], "proof": "0x" + os.urandom(256).hex()}}
            else:  # not even JSON
                payload = None
            kw = {"json": payload} if payload is not None else {"data": os.urandom(300)}
            async with http.post(url_of(gw, ENDPOINT), **kw) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
                if r.status == 503:
                    retry_after.add(r.headers.get("Retry-After", ""))

        latencies: list[float] = []

        async def human() -> None:
            for _ in range(60):
                t0 = time.perf_counter()
                async with http.get(url_of(gw, "/api/x"), headers={"Authorization": f"PoP {token}"}) as r:
                    assert r.status == 200
                    await r.read()
                latencies.append(time.perf_counter() - t0)
                await asyncio.sleep(0.01)

        started = time.perf_counter()
        flood = [asyncio.create_task(attack(i)) for i in range(600)]
        await asyncio.gather(human(), *flood)
        took = time.perf_counter() - started
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1]
    pool = gw.gateway.endpoints[ENDPOINT].pool
    print(
        f"\nflood: 600 proofs in {took:.2f}s, statuses {statuses}, pool {pool.stats}; "
        f"session requests p50 {p50 * 1000:.1f} ms p99 {p99 * 1000:.1f} ms max "
        f"{latencies[-1] * 1000:.1f} ms"
    )
    assert p99 < 1.0, latencies[-5:]
    assert statuses.get(503, 0) > 0, statuses
    assert retry_after and all(v.isdigit() and int(v) >= 1 for v in retry_after)
    assert statuses.get(401, 0) > 0 and statuses.get(400, 0) > 0
    assert set(statuses) <= {400, 401, 503}, statuses
    assert pool.pending == 0 and gw.gateway.metrics.pool_queue._value.get() == 0
