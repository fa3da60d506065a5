"""Admission by class when overloaded: shed the cheapest, least-trusted traffic first.

Every request is put in one of four *admission classes* from its headers alone,
before anything expensive (no MAC, no signature, no store; the credential is
verified later by the pipeline as always, so a forged prefix buys a place in
the queue, never a pass):

* ``proof``: popgate's own endpoints (``/.well-known/popgate/…``: session,
  puzzle, World ID, zkLogin, credits top-up; not the forward-auth endpoint, whose
  calls carry the client's own headers and are classed by them) and requests carrying work
  or a token to redeem (``PoP-Puzzle`` / ``X-Hashcash``, ``Authorization: PrivateToken``);
* ``session``: ``Authorization: PoP …`` or the session cookie;
* ``payer``: a payment or a signed agent (``PAYMENT-SIGNATURE`` / ``X-PAYMENT``,
  ``Authorization: Bearer pgk_…``, an RFC 9421 ``Signature``);
* ``anonymous``: everything else.

Each class has an in-flight bound and a queue deadline (``[overload.classes]``).
A request over its class's bound waits up to the deadline for a slot, then gets
a minimal ``503 overloaded`` with ``Retry-After``; ``anonymous`` has no queue by
default. When the event loop lags (a probe every ``PROBE`` seconds measures how
late it wakes; smoothed, and over it for ``SUSTAIN`` probes in a row: a policy reload or
a GC pause is no overload) beyond ``loop_lag_high`` while requests
arrive at ``lag_min_rate`` per second or more and the process itself is busy (its CPU
time at least ``busy_cpu`` of the wall time: a host that preempts the gateway makes it
lag too, and shedding would not help), anonymous requests are *shed*: refused at once
and their connection closed (what a flood pipelined behind them is dropped unread):
they are the flood, and a refusal costs less than their 402. While shedding, a share
of them is still admitted, at a rate steered by the lag (cut by a fifth per probe
while it is over half of ``loop_lag_high``, raised 0.5 % per probe under it): the
loop stays about that fast for everyone else and the spare capacity still answers
anonymous clients. Shedding ends once that rate admits every anonymous arrival with
the lag low for ``CALM`` probes in a row, or the request rate falls under its bar.
The other classes are never refused for lag, only for their own bound.

``popgate_shed_total{klass}`` counts refusals, ``popgate_admitted_inflight{klass}``
shows the classes' in-flight counts, ``popgate_loop_lag_seconds`` the lag.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from popgate.gateway.http.forward_auth import AUTH_PATH, is_auth_path
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.ops.validation import Collector

CLASSES = ("anonymous", "payer", "session", "proof")
ENDPOINTS = "/.well-known/popgate/"
PROBE = 0.01  # seconds between event-loop lag probes
SUSTAIN = 5  # probes in a row over loop_lag_high before lag sheds (one long pause is no overload)
CALM = 50  # probes in a row admitting all anonymous arrivals, lag low, before shedding stops
STEP = 2.0  # anonymous admits/s added per calm probe while shedding (at least; else 0.5 %)
_WORK = ("PoP-Puzzle", "X-Hashcash")
_PAYER = ("PAYMENT-SIGNATURE", "X-PAYMENT", "Signature")
_KEYS = {
    "enabled",
    "loop_lag_high",
    "lag_min_rate",
    "busy_cpu",
    "retry_after",
    "challenge_window",
    "challenge_min_rate",
    "classes",
}


@dataclass(frozen=True, slots=True)
class ClassLimit:
    in_flight: int
    queue: float  # seconds a request over the bound may wait for a slot


def _defaults() -> dict[str, ClassLimit]:
    return {
        "anonymous": ClassLimit(128, 0.0),
        "payer": ClassLimit(256, 0.5),
        "session": ClassLimit(512, 0.5),
        "proof": ClassLimit(64, 1.0),
    }


@dataclass(frozen=True, slots=True)
class OverloadConfig:
    """The ``[overload]`` table."""

    enabled: bool = True
    loop_lag_high: float = 0.025
    lag_min_rate: float = 200.0  # requests/s: below it, lag alone sheds nothing
    busy_cpu: float = 0.5  # CPU time / wall time of the process: below it, lag alone sheds nothing
    retry_after: int = 1
    challenge_window: float = 1.0  # seconds a 402 is reused (gateway/pipeline/challenge_cache.py)
    challenge_min_rate: float = 10.0  # requests/s from the network before its 402s are reused
    classes: dict[str, ClassLimit] = field(default_factory=_defaults)


def collect_overload(c: Collector, table: Any) -> OverloadConfig | None:
    """Validate ``[overload]``; None after recording every problem with its key path."""
    if table is None:
        return OverloadConfig()
    if not isinstance(table, dict):
        c.problem("overload", "expected a table")
        return None
    before = len(c.problems)
    c.unknown_keys("overload", table, _KEYS)
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        c.problem("overload.enabled", f"expected true or false, got {enabled!r}")
    lag = _number(c, "overload.loop_lag_high", table.get("loop_lag_high", 0.025), 0.001, 10.0)
    rate = _number(c, "overload.lag_min_rate", table.get("lag_min_rate", 200.0), 0.0, 1e9)
    busy = _number(c, "overload.busy_cpu", table.get("busy_cpu", 0.5), 0.0, 1.0)
    retry = _number(c, "overload.retry_after", table.get("retry_after", 1), 1, 3600, integer=True)
    window = _number(c, "overload.challenge_window", table.get("challenge_window", 1.0), 0.0, 60.0)
    share = _number(c, "overload.challenge_min_rate", table.get("challenge_min_rate", 10.0), 0.0, 1e9)
    classes = _classes(c, table.get("classes", {}))
    if len(c.problems) > before:
        return None
    return OverloadConfig(bool(enabled), float(lag), rate, busy, int(retry), window, share, classes)


def _number(c: Collector, where: str, v: Any, lo: float, hi: float, *, integer: bool = False) -> float:
    ok = isinstance(v, int) if integer else isinstance(v, (int, float))
    if not ok or isinstance(v, bool) or not lo <= v <= hi:
        kind = "an integer" if integer else "a number"
        c.problem(where, f"expected {kind} in {lo}..{hi}, got {v!r}")
        return lo
    return float(v)


def _classes(c: Collector, table: Any) -> dict[str, ClassLimit]:
    out = _defaults()
    if not isinstance(table, dict):
        c.problem("overload.classes", "expected a table of class = { in_flight, queue }")
        return out
    for name, v in table.items():
        where = f"overload.classes.{name}"
        if name not in out:
            c.problem(where, f"unknown class (expected one of: {', '.join(CLASSES)})")
            continue
        if not isinstance(v, dict):
            c.problem(where, "expected a table { in_flight = N, queue = seconds }")
            continue
        c.unknown_keys(where, v, {"in_flight", "queue"})
        n = _number(c, f"{where}.in_flight", v.get("in_flight", out[name].in_flight), 1, 1e6, integer=True)
        q = _number(c, f"{where}.queue", v.get("queue", out[name].queue), 0.0, 60.0)
        out[name] = ClassLimit(int(n), float(q))
    return out


def admission_class(path: str, headers: Mapping[str, str], cookie_prefix: str) -> str:
    """The request's admission class from its path and headers (prefix checks only)."""
    if path.startswith(ENDPOINTS) and not is_auth_path(path):
        return "proof"  # a forward-auth call is classed by the client's headers it carries
    auth = headers.get("Authorization")
    if auth is not None:
        if auth[:11].lower() == "pop-puzzle " or auth[:13].lower() == "privatetoken ":
            return "proof"
        if auth[:4].lower() == "pop ":
            return "session"
        if auth[:11] == "Bearer pgk_":
            return "payer"
    for name in _WORK:
        if name in headers:
            return "proof"
    cookie = headers.get("Cookie")
    if cookie is not None and cookie_prefix in cookie:
        return "session"
    for name in _PAYER:
        if name in headers:
            return "payer"
    return "anonymous"


def _shed_bodies(retry_after: int) -> tuple[bytes, bytes]:
    problem = {
        "type": "urn:popgate:problem:overloaded",
        "title": "Overloaded",
        "status": 503,
        "reason": "overloaded",
        "detail": f"popgate is busy; retry in {retry_after} s.",
        "retry_after": retry_after,
    }
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>503 Overloaded</title>'
        f"</head><body><main><h1>Busy right now</h1><p>Please retry in {retry_after} s.</p>"
        "</main></body></html>"
    )
    return json.dumps(problem, separators=(",", ":")).encode(), page.encode()


class Admission:
    """Per-class in-flight counts and queues for one event loop; see the module doc."""

    def __init__(self, config: OverloadConfig, metrics: Metrics, cookie_name: str) -> None:
        self.config = config
        self.limits = config.classes
        self.cookie_prefix = cookie_name + "="
        self.in_flight: dict[str, int] = dict.fromkeys(CLASSES, 0)
        self.waiting: dict[str, collections.deque[asyncio.Future[None]]] = {
            k: collections.deque() for k in CLASSES
        }
        self.lag = 0.0
        self.rate = 0.0  # requests/s, smoothed like the lag
        self.cpu = 0.0  # the process's CPU time / wall time, smoothed like the lag
        self.arrivals = 0
        self.anonymous = 0  # anonymous arrivals since the last probe
        self.anon_rate = 0.0  # anonymous requests/s, smoothed like the lag
        self.allow = 0.0  # anonymous requests/s admitted while shedding (AIMD on the lag)
        self.tokens = 0.0  # admits left now (refilled at ``allow`` per second)
        self._busy = False  # lag over loop_lag_high while requests arrive at lag_min_rate
        self._over = 0  # probes in a row with the lag over loop_lag_high
        self._calm = 0  # probes in a row admitting every anonymous arrival with the lag low
        self.task: asyncio.Task[None] | None = None
        self._shed = {k: metrics.shed.labels(k) for k in CLASSES}
        self._gauge = {k: metrics.admitted.labels(k) for k in CLASSES}
        self._lag_gauge = metrics.loop_lag
        self._json, self._html = _shed_bodies(config.retry_after)
        self._retry = str(config.retry_after)

    def classify(self, request: web.BaseRequest, *, auth: bool = False) -> str:
        """``auth``: ``request`` is the original behind a forward-auth call (classed as the call is)."""
        self.arrivals += 1
        klass = admission_class(AUTH_PATH if auth else request.path, request.headers, self.cookie_prefix)
        if klass == "anonymous":
            self.anonymous += 1
        return klass

    async def enter(self, klass: str) -> bool:
        """Take a slot for ``klass`` (waiting up to its queue deadline); False: shed it."""
        if klass == "anonymous" and self._busy:
            if self.tokens < 1.0:
                return False
            self.tokens -= 1.0
        limit = self.limits[klass]
        if self.in_flight[klass] < limit.in_flight and not self.waiting[klass]:
            self.in_flight[klass] += 1
            return True
        if limit.queue <= 0:
            return False
        return await self._queue(klass, limit.queue)

    async def _queue(self, klass: str, deadline: float) -> bool:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self.waiting[klass]
        queue.append(waiter)
        try:
            async with asyncio.timeout(deadline):
                await waiter
            return True  # leave() handed us its slot
        except TimeoutError:
            return waiter.done() and not waiter.cancelled()  # granted just at the deadline
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.leave(klass)  # granted, then the client went away: pass the slot on
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            with contextlib.suppress(ValueError):
                queue.remove(waiter)

    def leave(self, klass: str) -> None:
        """Release a slot: hand it to the oldest live waiter of the class, else free it."""
        queue = self.waiting[klass]
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: in_flight unchanged
                return
        self.in_flight[klass] -= 1

    def shed(self, request: web.BaseRequest, klass: str, *, proxy: bool = False) -> web.Response:
        """The minimal refusal: 503 ``overloaded`` with Retry-After (a page for browsers).
        Refused for lag, the connection is closed too: the requests a flood pipelined behind
        this one are dropped unread, and a new connection costs the client a handshake. Not a
        forward-auth call's (``proxy``): that connection is the edge proxy's, shared by everyone."""
        self._shed[klass].inc()
        html = "text/html" in request.headers.get("Accept", "")
        response = web.Response(
            status=503,
            body=self._html if html else self._json,
            content_type="text/html" if html else "application/problem+json",
            headers={"Retry-After": self._retry, "Cache-Control": "no-store"},
        )
        if self._busy and klass == "anonymous" and not proxy:
            response.force_close()
        return response

    # -- the lag probe (a background task of the gateway) -------------------
    async def start(self) -> None:
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._probe(), name="popgate-admission")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self.task
            self.task = None

    def sample(self, late: float, elapsed: float, cpu: float) -> None:
        """One probe, ``elapsed`` seconds after the last, woke ``late`` seconds late, and the
        process used ``cpu`` seconds of CPU meanwhile. Smoothed (EWMA, 0.3 per probe): a single
        hiccup (a GC pause, a process spawn) sheds nothing."""
        span = max(elapsed, 1e-6)
        self.lag += 0.3 * (late - self.lag)
        self.rate += 0.3 * (self.arrivals / span - self.rate)
        self.cpu += 0.3 * (min(cpu / span, 1.0) - self.cpu)
        self.anon_rate += 0.3 * (self.anonymous / span - self.anon_rate)
        self.arrivals = self.anonymous = 0
        c = self.config
        high = c.loop_lag_high
        self._over = self._over + 1 if self.lag > high else 0
        if not self._busy:
            # five probes over the bar, or two far over it (a flood's first turns of the loop
            # take 100 ms and more each: five of them would be half a second of it)
            sustained = self._over >= SUSTAIN or (self._over >= 2 and self.lag > 4 * high)
            if sustained and self.rate >= c.lag_min_rate and self.cpu >= c.busy_cpu:
                self._busy, self._calm = True, 0
                self.allow, self.tokens = self.anon_rate / 2, 0.0
            return
        # Shedding: admit anonymous requests at ``allow`` per second, cut by a fifth per
        # probe while the lag is over half the bar, raised a little per probe under it
        # (the shed ones cost less, so the lag falls and admits creep back up).
        if self.lag > high / 2:
            self.allow *= 0.8
        else:
            self.allow += max(STEP, 0.005 * self.allow)
        self.tokens = min(self.tokens + self.allow * span, max(1.0, self.allow * 0.05))
        # the end: every anonymous arrival admitted, the lag low, for CALM probes; or no flood
        calm = self.allow >= self.anon_rate and self.lag < high / 2
        self._calm = self._calm + 1 if calm else 0
        self._busy = self._calm < CALM and self.rate >= c.lag_min_rate

    async def _probe(self) -> None:
        loop = asyncio.get_running_loop()
        ticks = 0
        while True:
            t0, c0 = loop.time(), time.process_time()
            await asyncio.sleep(PROBE)
            elapsed = loop.time() - t0
            self.sample(max(0.0, elapsed - PROBE), elapsed, time.process_time() - c0)
            ticks += 1
            if ticks % 25 == 0:
                self._lag_gauge.set(self.lag)
                for k, g in self._gauge.items():
                    g.set(self.in_flight[k])
