"""Two gateway processes, one Redis: a nullifier is spent exactly once across both."""

from __future__ import annotations

import asyncio

import aiohttp

from tests.gateway.schemes.worldid_support import ENDPOINT, body, forget_nullifiers, worldid_toml
from tests.support.servers import free_port, gateway_process, wait_port_async, write_config


async def test_same_nullifier_at_two_gateways_at_once(tmp_path, upstream, redis_url):
    """The same proofs sent to both processes at the same moment: per nullifier, exactly
    one session (sessions_per_nullifier = 1), everything else nullifier_reused."""
    await forget_nullifiers(redis_url)
    procs, ports = [], []
    try:
        for name in ("a", "b"):
            d = tmp_path / name
            d.mkdir()
            port = free_port()
            cfg = write_config(d, upstream, store=redis_url, listen=port, extra=worldid_toml(gate_rate=1000))
            procs.append(gateway_process(cfg))
            ports.append(port)
        for port in ports:
            await wait_port_async(port, timeout=30)
        async with aiohttp.ClientSession() as http:

            async def send(port: int, case: int) -> tuple[int, int, str]:
                async with http.post(f"http://127.0.0.1:{port}{ENDPOINT}", json=body(case)) as r:
                    return case, r.status, (await r.json(content_type=None)).get("reason", "ok")

            # Warm both (key prepared, connections open) with a proof that is refused.
            for port in ports:
                assert (await send(port, 2))[1] == 401
            tasks = [send(port, case) for _ in range(4) for port in ports for case in (0, 1)]
            results = await asyncio.gather(*tasks)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
    for case in (0, 1):
        mine = [(s, reason) for c, s, reason in results if c == case]
        assert sorted(mine).count((200, "ok")) == 1, mine
        assert all(x == (409, "nullifier_reused") for x in mine if x != (200, "ok")), mine
