"""Benchmark: a request through popgate as a session holder, a delegated agent and a
Privacy Pass redemption, side by side in one run (in-process gateway, memory store,
the demo origin on loopback, sequential requests).

Run: ``.venv/bin/python tests/bench/bench_ppass.py`` (a script, not a test). Prints the
median and p90 latency of each kind, three rounds taking turns, and each against the
plain session in the same round.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from popgate.gateway.agent import Delegated, public_jwk
from popgate.gateway.cli.demo_upstream import make_app
from popgate.gateway.http.server import start
from popgate.gateway.ops.config import load_config
from popgate.verifiers.privatepass import b64u
from tests.support.servers import serve_app, write_config

N = 300


async def timed(
    headers: list[dict[str, str]], one: Callable[[dict[str, str]], Awaitable[int]]
) -> list[float]:
    """Latency of each request; the client's work (signing, minting tokens) is done before."""
    out = []
    for h in headers:
        t = time.perf_counter()
        status = await one(h)
        out.append((time.perf_counter() - t) * 1e6)
        assert status == 200, status
    return out


async def main() -> None:
    issuer = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    extra = f"""
[privatepass]
[[privatepass.issuers]]
name = "issuer.bench"
token_keys = ["{b64u(spki)}"]
[delegation]
daily_quota = 0
"""
    async with serve_app(make_app()) as origin:
        tmp = Path(tempfile.mkdtemp())
        running = await start(load_config(write_config(tmp, f"http://127.0.0.1:{origin}", extra=extra)))
        g = running.gateway
        host, port = running.proxy.addresses[0][:2]
        base = f"http://{host}:{port}"
        human = g.services.sessions.issue(klass="human", subject="h", now=time.time(), ttl=3600)
        try:
            async with aiohttp.ClientSession() as http:
                key = ed25519.Ed25519PrivateKey.generate()
                async with http.post(
                    base + "/.well-known/popgate/delegate",
                    json={"jwk": public_jwk(key)},
                    headers={"Authorization": f"PoP {human}"},
                ) as r:
                    d = await r.json()
                agent = Delegated(d["token"], d["id"], key)
                async with http.get(base + "/api/x") as r:
                    way = next(w for w in (await r.json())["ways_out"] if w["kind"] == "privatepass")
                text = way["challenges"][0]["challenge"]
                digest = hashlib.sha256(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))).digest()
                pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)

                url = base + "/api/x"

                async def get(h: dict[str, str]) -> int:
                    async with http.get(url, headers=h) as r:
                        await r.read()
                        return r.status

                def token() -> dict[str, str]:
                    ti = b"\x00\x02" + os.urandom(32) + digest + hashlib.sha256(spki).digest()
                    sig = issuer.sign(ti, pss, hashes.SHA384())
                    return {"Authorization": f"PrivateToken token={b64u(ti + sig)}"}

                for rnd in range(3):
                    kinds = {
                        "session": [{"Authorization": f"PoP {human}"}] * N,
                        "delegated agent": [agent.headers("GET", url) for _ in range(N)],
                        "privatepass redemption": [token() for _ in range(N)],
                    }
                    res = {name: await timed(hs, get) for name, hs in kinds.items()}
                    ref = statistics.median(res["session"])
                    print(f"round {rnd}:")
                    for name, xs in res.items():
                        med, p90 = statistics.median(xs), statistics.quantiles(xs, n=10)[-1]
                        row = f"median {med:6.0f} µs  p90 {p90:6.0f} µs  × session {med / ref:4.2f}"
                        print(f"  {name:24s} {row}")
        finally:
            await running.stop()


if __name__ == "__main__":
    asyncio.run(main())
