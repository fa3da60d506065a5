"""The soak's verdict: a robust slope (Theil–Sen: the median of the slopes between every
two points, so a GC pause or one slow interval does not move it) fitted over the second
half of the load, per series, against a threshold per kind. Pure functions of the samples.

A check fails on growth above its threshold, on too few points to fit (fail closed), and a
worker that exits or is replaced during the run fails the soak. Store keys are split by
prefix (``pg:{kind:...}``): prefixes in ``durable`` (balances, API keys, settlement receipts
and per-identity tallies) grow with traffic or identities by design and are only reported;
every other key must be bounded by its TTL. A prefix whose TTL is longer than the first half
had no time to settle: it is reported as such and left out of the fit rather than misread as a leak.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

DURABLE = ("credits", "apikey", "spent", "worldid-nullifier", "x402q", "x402debt")


@dataclass(frozen=True)
class Limits:
    rss_mb_per_min: float = 1.0
    fds_per_min: float = 0.5
    keys_per_min: float = 30.0
    p99_ms_per_min: float = 20.0
    min_points: int = 5
    durable: tuple[str, ...] = DURABLE


@dataclass
class Check:
    name: str
    unit: str
    slope: float | None  # per minute over the window; None: too few points
    limit: float
    start: float | None = None  # first and last value of the whole run (for the report)
    end: float | None = None
    points: int = 0

    @property
    def passed(self) -> bool:
        return self.slope is not None and self.slope <= self.limit


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failures that are not a slope
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and all(c.passed for c in self.checks)


def theil_sen(points: list[tuple[float, float]]) -> float | None:
    """Median slope (per second) over every pair of points with distinct times."""
    slopes = [
        (y2 - y1) / (t2 - t1) for i, (t1, y1) in enumerate(points) for t2, y2 in points[i + 1 :] if t2 != t1
    ]
    return statistics.median(slopes) if slopes else None


def check(
    name: str,
    unit: str,
    series: list[tuple[float, float]],
    window: tuple[float, float],
    lim: float,
    min_points: int,
) -> Check:
    """Fit ``series`` (seconds, value) inside ``window``; slope in ``unit`` per minute."""
    inside = [(t, y) for t, y in series if window[0] <= t <= window[1]]
    slope = theil_sen(inside) if len(inside) >= min_points else None
    return Check(
        name,
        unit,
        None if slope is None else slope * 60,
        lim,
        start=series[0][1] if series else None,
        end=series[-1][1] if series else None,
        points=len(inside),
    )


def bin_p99(p99: list[tuple[float, float, float]], interval: float) -> list[tuple[float, float]]:
    """Locust's ~10 s-window p99 readings (one a second) → one value per ``interval`` (median)."""
    bins: dict[int, list[float]] = {}
    for t, v, _users in p99:
        bins.setdefault(int(t // interval), []).append(v)
    return [((b + 1) * interval, statistics.median(v)) for b, v in sorted(bins.items())]


def key_series(
    samples: list[dict[str, Any]], lim: Limits, settle: float
) -> tuple[dict[str, list[tuple[float, float]]], dict[str, Any]]:
    """Per sample: keys bounded by a TTL that settles within ``settle`` seconds (fitted), keys
    without a TTL outside ``durable`` (fitted), durable keys and keys of prefixes whose longest
    TTL seen is above ``settle`` (both only plotted); and those slow prefixes."""
    keyed = [s for s in samples if "keys" in s and "ttl" in s["keys"]]
    max_ttl: dict[str, float] = {}
    for s in keyed:
        for kind, ttl in s["keys"]["max_ttl"].items():
            max_ttl[kind] = max(max_ttl.get(kind, 0.0), ttl)
    slow = {k for k, v in max_ttl.items() if v > settle and k not in lim.durable}
    out: dict[str, list[tuple[float, float]]] = {"bounded": [], "persistent": [], "durable": [], "slow": []}
    for s in keyed:
        k, t = s["keys"], s["t"]
        out["bounded"].append(
            (t, sum(v for p, v in k["ttl"].items() if p not in lim.durable and p not in slow))
        )
        out["persistent"].append((t, sum(v for p, v in k["persistent"].items() if p not in lim.durable)))
        out["durable"].append(
            (t, sum(v for p in lim.durable for v in (k["ttl"].get(p, 0), k["persistent"].get(p, 0))))
        )
        out["slow"].append((t, sum(v for p, v in k["ttl"].items() if p in slow)))
    return out, {"slow": {k: max_ttl[k] for k in sorted(slow)}}


def judge(
    samples: list[dict[str, Any]],
    p99: list[tuple[float, float, float]],
    duration: float,
    interval: float,
    lim: Limits,
) -> Verdict:
    """The verdict over the second half of ``duration`` seconds of load."""
    v = Verdict()
    window = (duration / 2, duration)
    pids = [set(s["workers"]) for s in samples]
    if not pids or not pids[0]:
        v.problems.append("no gateway worker was found")
        return v
    if any(p != pids[0] for p in pids):
        gone = sorted(set().union(*pids) - set.intersection(*pids))
        v.problems.append(f"workers exited or were replaced during the run (pids {', '.join(gone)})")
    for pid in sorted(pids[0], key=int):
        rows = [(s["t"], s["workers"][pid]) for s in samples if pid in s["workers"]]
        v.checks.append(
            check(
                f"RSS worker {pid}",
                "MiB",
                [(t, w["rss_mb"]) for t, w in rows],
                window,
                lim.rss_mb_per_min,
                lim.min_points,
            )
        )
        v.checks.append(
            check(
                f"fds worker {pid}",
                "fds",
                [(t, w["fds"]) for t, w in rows],
                window,
                lim.fds_per_min,
                lim.min_points,
            )
        )
    if any("keys_error" in s for s in samples):
        v.problems.append(f"the store did not answer {sum('keys_error' in s for s in samples)} key samples")
    if any("keys" in s for s in samples):
        series, info = key_series(samples, lim, settle=window[0])
        v.checks.append(
            check(
                "store keys bounded by TTL",
                "keys",
                series["bounded"],
                window,
                lim.keys_per_min,
                lim.min_points,
            )
        )
        v.checks.append(
            check(
                "store keys without TTL (not durable)",
                "keys",
                series["persistent"],
                window,
                lim.keys_per_min,
                lim.min_points,
            )
        )
        if info["slow"]:
            v.notes.append(
                "prefixes whose TTL outlasts the first half (reported, not fitted): "
                + ", ".join(f"{k} ({t:.0f} s)" for k, t in info["slow"].items())
            )
    v.checks.append(
        check("p99 latency", "ms", bin_p99(p99, interval), window, lim.p99_ms_per_min, lim.min_points)
    )
    return v
