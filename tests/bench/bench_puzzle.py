"""Benchmark: puzzle and stamp verification, the Python solver, policy matching.

Run: ``.venv/bin/python tests/bench/bench_puzzle.py`` (a script, not a test).
Prints µs per operation and ratios against one bare SHA-256 measured in the
same run, so numbers from different machines compare.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from popgate.gateway import client
from popgate.gateway.stores.memory import MemoryStore
from popgate.policies import loader
from popgate.policies.classify import classify
from popgate.policies.model import RequestView
from popgate.verifiers import hashcash, puzzle

NOW = 1_795_219_200.0  # 2026-11-21T00:00:00Z


def per_call(fn: Callable[[], object], n: int, repeat: int = 5) -> float:
    """Best-of-``repeat`` µs per call."""
    best = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best.append((time.perf_counter() - t0) / n * 1e6)
    return min(best)


POLICY_20 = (
    """
[default]
all = { kind = "challenge", ways = ["prove", "puzzle", "pay"], price = "0.001", min_bits = 16 }
human = "allow"
"""
    + "".join(
        f"""
[[rules]]
name = "r{i}"
path = ["/svc{i}/**", "/v{i}/items/*"]
methods = ["GET", "POST"]
action = {{ kind = "charge", price = "0.00{i % 9 + 1}" }}
"""
        for i in range(14)
    )
    + """
[[rules]]
name = "ua"
user_agent = "(?i)HeadlessChrome|PhantomJS"
weight = 10
[[rules]]
name = "nets"
networks = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "2001:db8:100::/48"]
action = "allow"
[[rules]]
name = "hdr"
headers = { "x-api-key" = "." }
action = { kind = "charge", price = "0.002" }
[[rules]]
name = "host"
host = "*.internal.example"
action = "deny"
[[rules]]
name = "agents"
declared_agent = ["*.google.com"]
action = "allow"
[[rules]]
name = "regex"
path_regex = "^/search(/.*)?$"
action = "challenge"
[[thresholds]]
name = "t"
weight = 10
action = "deny"
"""
)


def main() -> None:
    data = b"x" * 100
    base = per_call(lambda: hashlib.sha256(data).digest(), 200_000)
    rows: list[tuple[str, float]] = []

    keys = puzzle.PuzzleKeys({"k1": b"k" * 32, "k0": b"o" * 32}, "k1")
    c = puzzle.issue(keys, network="203.0.113.0/24", scope="api", bits=16, now=NOW)
    nonces, _ = puzzle.solve(c.wire, 16)
    value = f"{c.wire}:{nonces[0]}"
    rows.append(
        (
            "puzzle parse+check (MAC+hash+binding)",
            per_call(
                lambda: puzzle.check(
                    keys, *puzzle.parse_solution(value), now=NOW, client_ip="203.0.113.7", scope="api"
                ),
                20_000,
            ),
        )
    )
    store = MemoryStore()

    async def spend_many(n: int) -> float:
        cs = []
        for _ in range(n):
            ci = puzzle.issue(keys, network="203.0.113.0/24", scope="api", bits=0, now=NOW)
            cs.append(f"{ci.wire}:0")
        t0 = time.perf_counter()
        for v in cs:
            await puzzle.verify(keys, v, now=NOW, store=store, network="203.0.113.0/24")
        return (time.perf_counter() - t0) / n * 1e6

    rows.append(("puzzle verify incl. MemoryStore claim", asyncio.run(spend_many(20_000))))
    rows.append(
        (
            "puzzle issue",
            per_call(
                lambda: puzzle.issue(keys, network="203.0.113.0/24", scope="api", bits=16, now=NOW), 20_000
            ),
        )
    )

    stamp = (Path(__file__).parents[1] / "fixtures/hashcash/stamps.tsv").read_text().split("\t")[0]
    rows.append(
        (
            "hashcash stamp check",
            per_call(
                lambda: hashcash.check(stamp, resource="api.example.com/v1", now=NOW, min_bits=16), 20_000
            ),
        )
    )

    policy = loader.loads(POLICY_20)
    assert len(policy.rules) == 20
    ip4, ip6 = ipaddress.ip_address("203.0.113.9"), ipaddress.ip_address("2001:db8::1")
    h = {"accept": "application/json"}
    views = {
        "popgate endpoint (engine shortcut)": RequestView(
            "a.example", "POST", "/.well-known/popgate/puzzle", "", h, "x", ip4
        ),
        "first rule matches": RequestView("a.example", "GET", "/svc0/x/y", "", h, "curl/8", ip4),
        "14th rule matches": RequestView("a.example", "GET", "/v13/items/9", "", h, "curl/8", ip4),
        "no rule: all 20 checked -> default": RequestView(
            "a.example", "GET", "/api/v1/things", "", h, "curl/8", ip6
        ),
        "tricky path normalized (/%2e%2e//x)": RequestView(
            "a.example", "GET", "/a/%2e%2e//search/q", "", h, "curl/8", ip4
        ),
    }
    for name, v in views.items():
        rows.append(
            (f"policy match, 20 rules: {name}", per_call(lambda v=v: policy.match(v, "unknown"), 50_000))
        )
    rows.append(
        (
            "classify (no evidence, browser UA)",
            per_call(lambda: classify([], "Mozilla/5.0 (X11) Chrome/130", h), 50_000),
        )
    )

    print(f"baseline: one SHA-256 of 100 bytes = {base:.3f} µs\n")
    print(f"{'operation':<58} {'µs/op':>9} {'x sha256':>9}")
    for name, us in rows:
        print(f"{name:<58} {us:9.2f} {us / base:9.1f}")

    rates = []
    for _i in range(5):
        ci = puzzle.issue(keys, network="203.0.113.0/24", scope="api", bits=18, now=NOW)
        s = client.solve_puzzle({"challenge": ci.wire, "bits": 18})
        rates.append(s.hash_rate)
    m = client.mint_hashcash("api.example.com/v1", 18, NOW)
    print(
        f"\nPython client puzzle solver (SHA-256): median {statistics.median(rates) / 1e6:.2f} M hashes/s "
        f"over 5 x 18-bit puzzles; expected solve time at 16/20/24 bits: "
        + ", ".join(f"{(1 << b) / statistics.median(rates):.2f}s" for b in (16, 20, 24))
    )
    print(f"Python client hashcash minter (SHA-1): {m.hash_rate / 1e6:.2f} M hashes/s (one 18-bit stamp)")


if __name__ == "__main__":
    main()
