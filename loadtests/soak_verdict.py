"""The soak's verdict: a robust slope (Theil–Sen: the median of the slopes between every
two points, so a GC pause or one slow interval does not move it) fitted over the second
half of the load, per series, against a threshold per kind. Pure functions of the samples.

A check fails on growth above its threshold, on too few points to fit (fail closed), and a
worker that exits or is replaced during the run fails the soak. Store keys are split by
prefix (``pg:{kind:...}``): prefixes in ``durable`` (balances, API keys, settlement receipts
and per-identity tallies) grow with traffic or identities by design and are only reported;
every other key must be bounded by its TTL, each prefix fitted on its own (its counts scaled to
one request rate: :func:`at_steady_rate`) from the time its
keys stop growing at a steady rate (one TTL after the load started, never before the second
half: :func:`settles_at`). A prefix whose TTL leaves too few samples after that had no time to
settle: it is reported as such and left out rather than misread as a leak. Keys without a TTL
outside ``durable`` never settle: fitted over the second half.
"""

from __future__ import annotations

import bisect
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


def bin_p99(p99: list[tuple[float, ...]], interval: float) -> list[tuple[float, float]]:
    """Locust's ~10 s-window p99 readings (one a second) → one value per ``interval`` (median)."""
    bins: dict[int, list[float]] = {}
    for t, v, *_ in p99:
        bins.setdefault(int(t // interval), []).append(v)
    return [((b + 1) * interval, statistics.median(v)) for b, v in sorted(bins.items())]


def prefix_series(samples: list[dict[str, Any]], lim: Limits) -> dict[str, Any]:
    """Per non-durable prefix, its TTL keys over time and the longest TTL seen; plus, over time,
    keys without a TTL outside ``durable`` and durable keys (for the plot)."""
    keyed = [s for s in samples if "keys" in s and "ttl" in s["keys"]]
    kinds = sorted({p for s in keyed for p in s["keys"]["ttl"] if p not in lim.durable})
    max_ttl = {p: max(s["keys"]["max_ttl"].get(p, 0.0) for s in keyed) for p in kinds}
    return {
        "ttl": {p: [(s["t"], float(s["keys"]["ttl"].get(p, 0))) for s in keyed] for p in kinds},
        "max_ttl": max_ttl,
        "persistent": [
            (s["t"], float(sum(v for p, v in s["keys"]["persistent"].items() if p not in lim.durable)))
            for s in keyed
        ],
        "durable": [
            (
                s["t"],
                float(
                    sum(v for k in ("ttl", "persistent") for p, v in s["keys"][k].items() if p in lim.durable)
                ),
            )
            for s in keyed
        ],
    }


def at_steady_rate(
    rows: list[tuple[float, float]], ttl: float, p99: list[tuple[float, ...]]
) -> list[tuple[float, float]]:
    """A TTL-bounded family holds (creation rate × TTL) keys: scale each count to the request
    rate of the last sample (requests over the trailing TTL, from locust's running total), so a
    run whose throughput drifts (a shared machine) is not misread as a leak. Unchanged without
    locust's totals."""
    done = [(r[0], r[3]) for r in p99 if len(r) > 3]
    if len(done) < 2:
        return rows
    times = [t for t, _ in done]

    def total(t: float) -> float:
        i = bisect.bisect_right(times, t)
        return done[max(0, i - 1)][1] if i else 0.0

    def trailing(t: float) -> float:
        return total(t) - total(t - ttl)

    ref = trailing(rows[-1][0]) if rows else 0.0
    return [(t, n * ref / trailing(t) if trailing(t) > 0 else n) for t, n in rows]


def settles_at(ttl: float, duration: float, interval: float) -> float:
    """When a key family with this TTL, created at a steady rate, stops growing: one TTL after
    the load started (plus two intervals of margin), and never before the second half."""
    return max(duration / 2, ttl + 2 * interval)


def judge(
    samples: list[dict[str, Any]],
    p99: list[tuple[float, ...]],
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
        keys = prefix_series(samples, lim)
        unsettled = []
        for kind, rows in keys["ttl"].items():
            ttl = keys["max_ttl"][kind]
            start = settles_at(ttl, duration, interval)
            inside = [(t, n) for t, n in rows if start <= t <= duration]
            steady = at_steady_rate(inside, ttl, p99)
            c = check(
                f"keys `{kind}` (TTL {ttl:.0f} s)", "keys", steady, (start, duration), lim.keys_per_min, 1
            )
            c.start, c.end = rows[0][1], rows[-1][1]
            if c.points < lim.min_points:
                unsettled.append(f"{kind} ({ttl:.0f} s)")
            else:
                v.checks.append(c)
        v.checks.append(
            check(
                "keys without TTL (not durable)",
                "keys",
                keys["persistent"],
                window,
                lim.keys_per_min,
                lim.min_points,
            )
        )
        if unsettled:
            v.notes.append(
                "key prefixes whose TTL had not passed early enough to fit "
                f"{lim.min_points} samples before the end (reported, not fitted): " + ", ".join(unsettled)
            )
    v.checks.append(
        check("p99 latency", "ms", bin_p99(p99, interval), window, lim.p99_ms_per_min, lim.min_points)
    )
    return v
