"""The soak's detector on its own: the verdict over known series, and the samplers against
real processes that leak memory and fds, and a real redis-server — so a soak that passes
means "no growth", not "nothing measured"."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

import redis

from loadtests.soak_probe import Sampler, children, redis_keys
from loadtests.soak_verdict import Limits, judge, theil_sen

# A supervisor that forks one worker; LEAK=1 makes the worker grow 2 MiB and one fd every 0.25 s.
WORKER = r"""
import os, sys, time
leak = sys.argv[1] == "1"
if os.fork() == 0:
    hold = []
    for _ in range(200):
        if leak:
            hold.append(bytearray(os.urandom(1)) * (2 << 20))
            hold.append(open(os.devnull))
        time.sleep(0.25)
    os._exit(0)
os.wait()
"""


def series(n: int, f: Any, pid: str = "1", keys: Any = None) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        s: dict[str, Any] = {"t": i * 10.0, "workers": {pid: {"rss_mb": f(i), "fds": 40}}}
        if keys is not None:
            s["keys"] = keys(i)
        out.append(s)
    return out


def test_theil_sen_ignores_outliers() -> None:
    pts = [(float(t), 100.0 + (500.0 if t in (3, 7) else 0.0)) for t in range(20)]
    assert theil_sen(pts) == 0.0
    assert theil_sen([(float(t), 2.0 * t) for t in range(10)]) == 2.0


def test_flat_run_with_spikes_passes_and_growth_fails() -> None:
    flat = judge(series(60, lambda i: 80.0 + (30.0 if i % 13 == 0 else 0.0)), [], 600, 10, Limits())
    assert [c.passed for c in flat.checks if c.unit != "ms"] == [True, True]
    grow = judge(series(60, lambda i: 80.0 + 0.5 * i), [], 600, 10, Limits())  # 3 MiB/min
    rss = next(c for c in grow.checks if c.name.startswith("RSS"))
    assert not rss.passed and abs((rss.slope or 0) - 3.0) < 1e-9 and not grow.passed


def test_growth_only_in_the_first_half_is_warm_up() -> None:
    v = judge(series(60, lambda i: 50.0 + min(i, 25) * 2.0), [], 600, 10, Limits())
    assert next(c for c in v.checks if c.name.startswith("RSS")).passed


def test_too_few_points_or_a_replaced_worker_fails_closed() -> None:
    short = judge(series(6, lambda i: 80.0), [], 600, 10, Limits())
    assert not short.passed and all(c.slope is None for c in short.checks)
    samples = series(60, lambda i: 80.0)
    for s in samples[40:]:
        s["workers"] = {"2": s["workers"]["1"]}
    replaced = judge(samples, [], 600, 10, Limits())
    assert not replaced.passed and "replaced" in replaced.problems[0]


def test_p99_drift_fails() -> None:
    p99 = [(float(t), 100.0 + t, 20.0) for t in range(600)]  # +60 ms a minute
    v = judge(series(60, lambda i: 80.0), p99, 600, 10, Limits())
    lat = next(c for c in v.checks if c.name == "p99 latency")
    assert not lat.passed and 55 < (lat.slope or 0) < 65


def keys_at(gcra: int, nottl: int, receipts: int) -> dict[str, Any]:
    return {
        "dbsize": gcra + nottl + receipts,
        "ttl": {"gcra": gcra, "x402q": receipts, "budget": 10_000 + receipts},
        "persistent": {"nonce": nottl},
        "max_ttl": {"gcra": 20.0, "x402q": 1e9, "budget": 600.0},
    }


def test_keys_bounded_by_ttl_vs_keys_that_never_expire() -> None:
    ok = judge(series(60, lambda i: 80.0, keys=lambda i: keys_at(500, 3, 40 * i)), [], 600, 10, Limits())
    assert [c.name for c in ok.checks if c.unit == "keys"] == [
        "keys `gcra` (TTL 20 s)",
        "keys without TTL (not durable)",
    ]
    assert all(c.passed for c in ok.checks if c.unit == "keys")
    assert "budget (600 s)" in ok.notes[0]  # its TTL outlasts the run: not fitted
    leak = judge(series(60, lambda i: 80.0, keys=lambda i: keys_at(500, 20 * i, 0)), [], 600, 10, Limits())
    no_ttl = next(c for c in leak.checks if c.name.startswith("keys without TTL"))
    assert not no_ttl.passed and no_ttl.slope == 120.0


def ttl_family(i: int, ttl: float, grow_after: float) -> dict[str, Any]:
    t = i * 10.0
    n = 3.0 * min(t, ttl) + grow_after * max(0.0, t - ttl)  # a steady rate: grows for one TTL
    return {"dbsize": n, "ttl": {"x402": n}, "persistent": {}, "max_ttl": {"x402": ttl}}


def test_a_key_family_is_fitted_once_its_ttl_has_passed() -> None:
    """Keys with a 300 s TTL created at a steady rate grow until 300 s, then hold: no leak, though
    the second half starts right at 300 s (a 10-minute run measured that). Still growing
    after: a leak."""
    settling = judge(series(60, lambda i: 80.0, keys=lambda i: ttl_family(i, 300, 0)), [], 600, 10, Limits())
    assert next(c for c in settling.checks if c.name.startswith("keys `x402`")).passed
    growing = judge(series(60, lambda i: 80.0, keys=lambda i: ttl_family(i, 300, 1)), [], 600, 10, Limits())
    c = next(c for c in growing.checks if c.name.startswith("keys `x402`"))
    assert not c.passed and c.slope == 60.0


def test_sampler_catches_a_real_leaking_worker_and_passes_a_quiet_one() -> None:
    procs = {leak: subprocess.Popen([sys.executable, "-c", WORKER, leak]) for leak in ("1", "0")}
    try:
        deadline = time.monotonic() + 10
        while not all(children(p.pid) for p in procs.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        samplers = {leak: Sampler(p.pid, None, 0.5, 40) for leak, p in procs.items()}
        for s in samplers.values():
            s.start()
        time.sleep(8)
        for s in samplers.values():
            s.stop.set()
            s.join(5)
    finally:
        for p in procs.values():
            p.kill()
            p.wait(5)
    lim = Limits(rss_mb_per_min=10, fds_per_min=10)
    leaky = judge(samplers["1"].samples, [], 8, 0.5, lim)
    quiet = judge(samplers["0"].samples, [], 8, 0.5, lim)
    assert [c.passed for c in leaky.checks if c.unit != "ms"] == [False, False], leaky.checks
    rss = leaky.checks[0]
    assert 300 < (rss.slope or 0) < 600  # 8 MiB/s = 480 MiB/min
    assert [c.passed for c in quiet.checks if c.unit != "ms"] == [True, True], quiet.checks
    assert all(len(s["workers"]) == 1 for s in samplers["0"].samples)


def test_redis_keys_counts_per_prefix_with_and_without_ttl(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.flushdb()
        for i in range(30):
            client.set(f"pg:{{gcra:n:10.0.{i}.0}}", 1, px=60_000)
        for i in range(5):
            client.set(f"pg:{{credits:acct{i}}}", 100)
        client.set("unrelated", 1)
        k = redis_keys(client)
    finally:
        client.flushdb()
        client.close()
    assert k["dbsize"] == 36
    assert k["ttl"] == {"gcra": 30} and k["persistent"] == {"credits": 5, "other": 1}
    assert 50 < k["max_ttl"]["gcra"] <= 60


def test_keys_that_follow_a_rising_request_rate_are_not_a_leak() -> None:
    """The 10-minute run on a shared machine: throughput rose from 2 to 4 requests/s worth of
    x402 keys (TTL 300 s) during the second half; the family doubled and then held. Judged on raw
    counts that was +118 keys/min (FAIL); at a steady request rate it is no growth."""
    ttl = 300.0

    def rate(t: float) -> float:
        return 2.0 if t < 300 else min(4.0, 2.0 + (t - 300) / 75)

    def total(t: float) -> float:  # requests so far: 5 per x402 key
        return sum(5 * rate(s) for s in range(int(t)))

    def keys(i: int) -> dict[str, Any]:
        t = i * 10.0
        n = sum(rate(s) for s in range(max(0, int(t - ttl)), int(t)))
        return {"dbsize": n, "ttl": {"x402": n}, "persistent": {}, "max_ttl": {"x402": ttl}}

    p99 = [(float(t), 100.0, 20.0, total(t)) for t in range(1, 601)]
    v = judge(series(61, lambda i: 80.0, keys=keys), p99, 600, 10, Limits())
    x402 = next(c for c in v.checks if c.name.startswith("keys `x402`"))
    assert x402.passed, x402
    raw = judge(series(61, lambda i: 80.0, keys=keys), [], 600, 10, Limits())  # no request totals
    assert not next(c for c in raw.checks if c.name.startswith("keys `x402`")).passed
