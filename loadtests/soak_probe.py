"""What a soak run samples, read from outside the gateway: each worker's RSS and
open fds (``/proc``), the store's keys (Redis ``DBSIZE``, and per key prefix with
their TTLs), and locust's p99 per interval (its ``_stats_history.csv``).

:class:`Sampler` is a thread that takes one :func:`sample` every ``interval``
seconds until stopped or ``max_samples`` are taken (bounded either way).
"""

from __future__ import annotations

import csv
import os
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

# popgate's store keys are ``pg:{kind:ident}`` (verifiers.spend.key): the prefix is ``kind``.
_KIND = re.compile(rb"^pg:\{([^:}]+)")
SCAN_LIMIT = 200_000  # beyond this many keys only DBSIZE is sampled (the per-prefix scan costs)


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the workers of a supervisor), sorted."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        # the command name (field 2) may hold spaces and parentheses: split after the last ")"
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            out.append(int(entry))
    return sorted(out)


def rss_mb(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise OSError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    """Open file descriptors of ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def kind_of(key: bytes) -> str:
    m = _KIND.match(key)
    return m.group(1).decode(errors="replace") if m else "other"


def redis_keys(client: Any) -> dict[str, Any]:
    """``DBSIZE``, and per prefix: keys with a TTL, keys without one, the longest TTL left (s)."""
    total = int(client.dbsize())
    out: dict[str, Any] = {"dbsize": total, "ttl": {}, "persistent": {}, "max_ttl": {}}
    if total > SCAN_LIMIT:
        return out
    ttl: Counter[str] = Counter()
    persistent: Counter[str] = Counter()
    max_ttl: dict[str, float] = {}
    cursor = 0
    while True:
        cursor, keys = client.scan(cursor=cursor, count=2000)
        if keys:
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.pttl(k)
            for k, ms in zip(keys, pipe.execute(), strict=True):
                kind = kind_of(k)
                if ms == -2:
                    continue  # expired between SCAN and PTTL
                if ms == -1:
                    persistent[kind] += 1
                else:
                    ttl[kind] += 1
                    max_ttl[kind] = max(max_ttl.get(kind, 0.0), ms / 1000)
        if cursor == 0:
            break
    out.update(ttl=dict(ttl), persistent=dict(persistent), max_ttl=max_ttl)
    return out


def sample(gateway_pid: int, client: Any, t0: float) -> dict[str, Any]:
    """One sample: time since ``t0``, per worker pid RSS and fds, the store's keys."""
    workers: dict[str, dict[str, float]] = {}
    for pid in children(gateway_pid):
        try:
            workers[str(pid)] = {"rss_mb": rss_mb(pid), "fds": open_fds(pid)}
        except OSError:
            continue  # exited between listing and reading: the next sample shows it
    s: dict[str, Any] = {"t": time.time() - t0, "at": time.time(), "workers": workers}
    if client is not None:
        try:
            s["keys"] = redis_keys(client)
        except Exception as exc:  # a store error is a finding to report, not a crash of the soak
            s["keys_error"] = type(exc).__name__
    return s


class Sampler(threading.Thread):
    """Samples every ``interval`` s until :attr:`stop` is set or ``max_samples`` are taken."""

    def __init__(self, gateway_pid: int, client: Any, interval: float, max_samples: int) -> None:
        super().__init__(daemon=True)
        self.gateway_pid, self.client = gateway_pid, client
        self.interval, self.max_samples = interval, max_samples
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.t0 = time.time()

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set() and len(self.samples) < self.max_samples:
            self.samples.append(sample(self.gateway_pid, self.client, self.t0))
            next_at += self.interval
            self.stop.wait(max(0.0, next_at - time.monotonic()))


def p99_series(history_csv: Path, t0: float) -> list[tuple[float, float, float, float]]:
    """(seconds since ``t0``, p99 ms, users, requests so far) per row of locust's stats history
    (Aggregated).

    Locust writes a row every second; its percentiles cover the last ~10 s, so each row is
    the p99 of one short interval. Rows before the first request (p99 0) are left out.
    """
    if not history_csv.exists():
        return []
    out = []
    for row in csv.DictReader(history_csv.open()):
        if row.get("Name") != "Aggregated" or row.get("99%") in (None, "", "N/A"):
            continue
        p99 = float(row["99%"])
        if p99 > 0:
            users, total = float(row.get("User Count") or 0), float(row.get("Total Request Count") or 0)
            out.append((float(row["Timestamp"]) - t0, p99, users, total))
    return out
