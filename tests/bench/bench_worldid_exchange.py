"""Throughput of ``POST /.well-known/popgate/worldid`` through a real gateway.

    .venv/bin/python -m tests.bench.bench_worldid_exchange [workers] [n]

Prints: the pooled verification latency (popgate_verification_seconds), the
exchange rate when every proof needs a pairing (distinct signals: each proof
is a real Groth16 check that fails on the signal), the rate for repeats (the
verdict cache), and, as the baseline in the same run, one in-process verify.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from popgate.gateway.cli.demo_upstream import make_app
from popgate.gateway.http.server import start
from popgate.gateway.ops.config import load_config
from tests.gateway.schemes.worldid_support import ENDPOINT, body, worldid_toml
from tests.support.servers import serve_app, write_config


async def main(workers: int, n: int) -> None:
    import json

    from popgate.verifiers.groth16 import prepared_key, verify
    from popgate.verifiers.worldid import external_nullifier, parse_result, signal_hash
    from tests.gateway.schemes.worldid_support import CASES, VK_FILE

    key = prepared_key(json.loads(VK_FILE.read_text()))
    parsed = parse_result(CASES[0]["idkit2_result"])
    pub = [
        parsed.merkle_root,
        parsed.nullifier,
        signal_hash(""),
        external_nullifier(CASES[0]["app_id"], "verify-human"),
    ]
    t0 = time.perf_counter()
    for _ in range(20):
        verify(key, parsed.proof, pub)
    inproc = (time.perf_counter() - t0) / 20
    async with serve_app(make_app()) as up:
        tmp = Path(tempfile.mkdtemp())
        cfg = load_config(
            write_config(
                tmp,
                f"http://127.0.0.1:{up}",
                extra=worldid_toml(workers=workers, queue_limit=10000, gate_rate=10**9),
            )
        )
        gw = await start(cfg)
        host, port = gw.proxy.addresses[0][:2]
        url = f"http://{host}:{port}{ENDPOINT}"
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=4 * workers)) as http:

                async def one(signal: str) -> int:
                    async with http.post(url, json={"result": body(0)["result"], "signal": signal}) as r:
                        await r.read()
                        return r.status

                await asyncio.gather(*(one(f"warm{i}") for i in range(2 * workers)))
                t0 = time.perf_counter()
                statuses = await asyncio.gather(*(one(f"s{i}") for i in range(n)))
                fresh = time.perf_counter() - t0
                assert set(statuses) == {401}, set(statuses)
                t0 = time.perf_counter()
                await asyncio.gather(*(one(f"s{i % 10}") for i in range(n)))
                cached = time.perf_counter() - t0
            samples = {
                s.name: s.value
                for m in gw.gateway.metrics.registry.collect()
                for s in m.samples
                if s.labels.get("scheme") == "worldid" and s.name.startswith("popgate_verification_seconds_")
            }
            mean = samples["popgate_verification_seconds_sum"] / samples["popgate_verification_seconds_count"]
        finally:
            await gw.stop()
    print(f"in-process verify (baseline): {inproc * 1000:.1f} ms")
    print(
        "pooled verification, mean submit->verdict incl. queueing at concurrency 4x workers: "
        f"{mean * 1000:.1f} ms ({workers} worker(s))"
    )
    print(f"exchange, every proof paired: {n / fresh:.0f} proofs/s ({n} in {fresh:.2f}s)")
    print(f"exchange, verdict-cache hits: {n / cached:.0f} proofs/s")


if __name__ == "__main__":
    asyncio.run(
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 2, int(sys.argv[2]) if len(sys.argv) > 2 else 300)
    )
