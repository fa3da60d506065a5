"""Spend-once across a fleet: two gateway processes sharing one real Redis."""

from __future__ import annotations

import asyncio

import aiohttp

from popgate.gateway import client
from tests.gateway.schemes.puzzle_support import puzzle_extra, way
from tests.support.servers import free_port, gateway_process, wait_port, write_config


async def test_same_solution_at_two_gateways_at_once_exactly_one_wins(upstream, redis_url, tmp_path):
    """One solution sent 20 times at the same moment, half to each gateway: exactly one 200,
    the rest 402 replayed; likewise for POSTs to the puzzle endpoint (one session, the rest 403)."""
    extra = puzzle_extra(tmp_path)
    ports, procs = [], []
    try:
        for name in ("a", "b"):
            d = tmp_path / name
            d.mkdir()
            port = free_port()
            procs.append(
                gateway_process(write_config(d, upstream, store=redis_url, listen=port, extra=extra))
            )
            ports.append(port)
        for port, proc in zip(ports, procs):
            wait_port(port, proc=proc)
        urls = [f"http://127.0.0.1:{p}" for p in ports]
        async with aiohttp.ClientSession() as s:
            async with s.get(urls[0] + "/api/x") as r:
                solved = client.respond(await r.json(), prefer=("puzzle",))

            async def hit(u: str) -> tuple[int, str]:
                async with s.get(u + "/api/x", headers=solved.headers) as r:
                    body = await r.read()
                    return r.status, body.decode()

            results = await asyncio.gather(*(hit(urls[i % 2]) for i in range(20)))
            assert [st for st, _ in results].count(200) == 1, results
            assert all('"replayed"' in b for st, b in results if st != 200)

            async with s.get(urls[1] + "/api/x") as r:
                pz = way(await r.json(), "puzzle")
            solution = client.solve_puzzle(pz).headers["PoP-Puzzle"]

            async def post(u: str) -> int:
                async with s.post(u + "/.well-known/popgate/puzzle", json={"solution": solution}) as r:
                    await r.read()
                    return r.status

            codes = await asyncio.gather(*(post(urls[i % 2]) for i in range(20)))
            assert codes.count(200) == 1 and codes.count(403) == 19, codes
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
