"""Bounded memory under a hostile mix: a real ``popgate`` process with the
shipped default policy and puzzles, hit for ~14 s from an asyncio client."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp

from popgate.gateway.ops.config import load_config
from tests.support.servers import ROOT, wait_port_async, write_config

SECONDS = 14.0
WORKERS = 24
RSS_LIMIT_MB = 250
GROWTH_LIMIT_MB = 40


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def junk(rng: random.Random, n: int) -> str:
    return base64.urlsafe_b64encode(rng.randbytes(n)).decode().rstrip("=")


def random_ip(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return ".".join(str(rng.randrange(1, 255)) for _ in range(4))
    return ":".join(f"{rng.randrange(65536):x}" for _ in range(8))


def hostile(rng: random.Random, base: str) -> tuple[str, str, dict[str, str], bytes | None]:
    """One request of the mix: (method, url, headers, body)."""
    path = "/" + "/".join(junk(rng, rng.randrange(1, 12)) for _ in range(rng.randrange(1, 6)))
    headers = {
        "X-Forwarded-For": ", ".join(random_ip(rng) for _ in range(rng.randrange(1, 4))),
        "User-Agent": junk(rng, rng.randrange(4, 60)),
    }
    kind = rng.randrange(7)
    method, body = "GET", None
    if kind == 0:  # garbage session tokens
        headers["Authorization"] = f"PoP v1.k1.{junk(rng, rng.randrange(10, 300))}.{junk(rng, 32)}"
    elif kind == 1:  # garbage puzzle / hashcash evidence
        headers["PoP-Puzzle"] = f"pz1.p1.{junk(rng, 80)}.{junk(rng, 8)}"
        headers["X-Hashcash"] = f"1:20:{junk(rng, 8)}:{junk(rng, 20)}::{junk(rng, 8)}:{junk(rng, 4)}"
    elif kind == 2:  # huge and numerous, but within limits (16 KiB, 100 fields): ~13 kB, 50 fields
        for i in range(4):
            headers[f"X-Pad-{i}"] = junk(rng, 1800)
        for _ in range(40):
            headers[f"X-{junk(rng, 6)}"] = junk(rng, 15)
        headers["Cookie"] = "; ".join(f"c{i}={junk(rng, 150)}" for i in range(10))
    elif kind == 3:  # malformed bodies to the puzzle endpoint
        method, path = "POST", "/.well-known/popgate/puzzle"
        body = rng.choice(
            [
                rng.randbytes(rng.randrange(1, 4000)),
                b"{" * 2000,
                b'{"challenge": "' + junk(rng, 500).encode() + b'", "nonce": 1}',
                b'{"solution": ' + b"[" * 500 + b"]" * 500 + b"}",
            ]
        )
        headers["Content-Type"] = rng.choice(["application/json", "text/plain", junk(rng, 20)])
    elif kind == 4:  # query strings and encoded paths
        path += "?" + "&".join(f"{junk(rng, 5)}={junk(rng, 40)}" for _ in range(rng.randrange(1, 30)))
        path = path.replace("/", rng.choice(["/", "//", "/%2e/", "/./"]), 2)
    elif kind == 5:  # signature-agent / httpsig noise
        headers["Signature-Agent"] = f'"https://{junk(rng, 10)}.example"'
        headers["Signature-Input"] = (
            f'sig1=("@authority");created={rng.randrange(2**31)};keyid="{junk(rng, 43)}"'
        )
        headers["Signature"] = f"sig1=:{base64.b64encode(rng.randbytes(64)).decode()}:"
    elif rng.random() < 0.3:  # over the limits: refused with 431, must not cost memory either
        headers["X-Big"] = junk(rng, 20000)
    return method, base + path, headers, body


async def test_memory_stays_bounded_under_hostile_mix(upstream, tmp_path):
    """24 concurrent loops, ~14 s (at most 4000 requests each): garbage tokens
    and evidence, random XFF from random networks (trusted proxy 127.0.0.1,
    so every request is a new client network), random paths and queries,
    ~13 kB / 50-field heads (just under the limits), some over, malformed
    bodies. VmRSS stays < 250 MB and grows by
    < 40 MB between 5 s and the end; no response is a 500; /healthz still
    answers on the admin port and the process is alive."""
    (tmp_path / "pz").write_bytes(os.urandom(24).hex().encode())
    extra = f"""
[policy]
file = "{ROOT / "policies" / "default.toml"}"
[puzzle]
signing_kid = "p1"
keys = [{{kid = "p1", secret_file = "{tmp_path / "pz"}"}}]
[credits]
"""
    path = write_config(tmp_path, upstream, extra=extra, server_extra='trusted_proxies = ["127.0.0.1/32"]')
    cfg = load_config(path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "popgate.gateway", "run", "--config", str(path), "--log-level", "ERROR"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{cfg.listen.port}"
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    samples: dict[str, float] = {}
    try:
        await wait_port_async(cfg.listen.port)
        await wait_port_async(cfg.admin.port)
        samples["start"] = rss_mb(proc.pid)
        started = time.monotonic()
        deadline = started + SECONDS
        connector = aiohttp.TCPConnector(limit=WORKERS)
        timeout = aiohttp.ClientTimeout(total=5)
        async with aiohttp.ClientSession(
            connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
        ) as http:

            async def loop(seed: int) -> None:
                rng = random.Random(seed)
                for _ in range(4000):
                    if time.monotonic() > deadline:
                        return
                    method, url, headers, body = hostile(rng, base)
                    try:
                        async with http.request(
                            method, url, headers=headers, data=body, allow_redirects=False
                        ) as r:
                            await r.read()
                            statuses[r.status] += 1
                    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                        errors[type(exc).__name__] += 1

            async def sampler() -> None:
                await asyncio.sleep(5.0)
                samples["5s"] = rss_mb(proc.pid)

            await asyncio.gather(sampler(), *(loop(i) for i in range(WORKERS)))
            samples["end"] = rss_mb(proc.pid)
            async with http.get(f"http://127.0.0.1:{cfg.admin.port}/healthz") as r:
                health = r.status
        took = time.monotonic() - started
        total = sum(statuses.values())
        print(
            f"\n{total} requests in {took:.1f}s, statuses {dict(statuses)}, client errors "
            f"{dict(errors)}, RSS MB {samples}"
        )
        assert proc.poll() is None and health == 200
        assert total > 2000, "the mix did not run"
        assert statuses[500] == 0 and not any(s >= 500 and s != 503 for s in statuses), statuses
        assert sum(errors.values()) < total * 0.01, errors
        assert max(samples.values()) < RSS_LIMIT_MB, samples
        assert samples["end"] - samples["5s"] < GROWTH_LIMIT_MB, samples
    finally:
        proc.terminate()
        proc.wait(10)
