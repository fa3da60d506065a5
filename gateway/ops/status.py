"""The operator status page on the admin listener, and what feeds it.

- ``GET /status``: a small HTML page (``gateway/static/status.html``: plain
  SVG and a few lines of JS, no build step) polling ``/status.json``.
- ``GET /status.json``: a summary of the metrics registry — requests by class
  and decision, responses, fees, puzzle difficulty, verification latency,
  evidence results, store errors, fail-opens and the top routes.
- ``popgate_route_requests_total{rule, code}``: requests per policy rule name
  (bounded by the policy file; ``(popgate)`` for popgate's own endpoints,
  ``(none)`` when no rule matched), counted by a gateway observer.

With several workers the registry read is the aggregate of all of them
(:func:`scrape_registry`, prometheus client multiprocess mode), so the page
and ``/metrics`` show the whole instance, whichever worker answers.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.samples import Sample

from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.ops.metrics_files import flush
from popgate.gateway.registry import Registry, Services

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Gauges that are a level per worker add up; these take the largest instead.
MAX_GAUGES = frozenset({"popgate_puzzle_difficulty_bits"})
STATIC = Path(__file__).parent.parent / "static"
TOP_ROUTES = 10
ROUTE_METRIC = "popgate_route_requests"


class _Aggregated:
    """The multiprocess collector, with per-worker gauges merged into one series."""

    def __init__(self, path: str) -> None:
        self.inner = MultiProcessCollector(None, path=path)  # type: ignore[no-untyped-call]

    def collect(self) -> Iterator[Metric]:
        for metric in self.inner.collect():  # type: ignore[no-untyped-call]
            if metric.type == "gauge":
                merged: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
                biggest = metric.name in MAX_GAUGES
                for s in metric.samples:
                    k = (s.name, tuple(sorted((a, b) for a, b in s.labels.items() if a != "pid")))
                    if k not in merged:
                        merged[k] = s.value
                    else:
                        merged[k] = max(merged[k], s.value) if biggest else merged[k] + s.value
                metric.samples = [Sample(n, dict(lb), v) for (n, lb), v in merged.items()]
            yield metric


def scrape_registry(metrics: Metrics) -> CollectorRegistry:
    """The registry ``/metrics`` and ``/status.json`` read.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` names a directory, as
    ``popgate run --workers N`` arranges): every worker's numbers, aggregated.
    Otherwise this process's own registry.
    """
    path = os.environ.get(MULTIPROC_ENV)
    if not path or not os.path.isdir(path):
        return metrics.registry
    flush()  # this worker's own numbers, up to this request
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Aggregated(path))
    return registry


# -- the summary ---------------------------------------------------------------


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Estimate a quantile from cumulative (upper bound, count) buckets, as PromQL does."""
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    prev_bound, prev_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return prev_bound
            span = count - prev_count
            return prev_bound + (bound - prev_bound) * ((rank - prev_count) / span if span else 1.0)
        prev_bound, prev_count = bound, count
    return prev_bound


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _nested(out: dict[str, Any], keys: list[str], value: float) -> None:
    for k in keys[:-1]:
        out = out.setdefault(k, {})
    out[keys[-1]] = out.get(keys[-1], 0) + value


def summarize(registry: CollectorRegistry, now: float | None = None) -> dict[str, Any]:
    """A JSON-ready summary of popgate's metrics in ``registry``."""
    s: dict[str, Any] = {
        "time": time.time() if now is None else now,
        "requests": {},
        "requests_total": 0,
        "decisions": {},
        "classes": {},
        "responses": {},
        "fees": {},
        "fees_total": 0,
        "difficulty": {},
        "verification": {},
        "evidence": {},
        "store_errors": {},
        "fail_open": {},
        "inflight": 0,
        "routes": [],
        "latency": {},
        "sessions_issued": 0,
    }
    hist: dict[tuple[str, str], list[tuple[float, float]]] = {}
    hsum: dict[tuple[str, str], float] = {}
    routes: dict[str, float] = {}
    for metric in registry.collect():
        for smp in metric.samples:
            n, lb, v = smp.name, smp.labels, smp.value
            if n == "popgate_requests_total":
                _nested(s["requests"], [lb["klass"], lb["decision"]], v)
                _nested(s["decisions"], [lb["decision"]], v)
                _nested(s["classes"], [lb["klass"]], v)
                s["requests_total"] += v
            elif n == "popgate_responses_total":
                _nested(s["responses"], [lb["code"]], v)
            elif n == "popgate_fees_atomic_total":
                _nested(s["fees"], [lb["rail"], lb["route"]], v)
                s["fees_total"] += v
            elif n == "popgate_puzzle_difficulty_bits":
                s["difficulty"][lb["scope"]] = v
            elif n == "popgate_evidence_total":
                _nested(s["evidence"], [lb["scheme"], lb["result"]], v)
            elif n == "popgate_store_errors_total":
                _nested(s["store_errors"], [lb["action"]], v)
            elif n == "popgate_fail_open_total":
                _nested(s["fail_open"], [lb["action"]], v)
            elif n == "popgate_inflight_requests":
                s["inflight"] += v
            elif n == "popgate_sessions_issued_total":
                s["sessions_issued"] += v
            elif n == f"{ROUTE_METRIC}_total":
                routes[lb["rule"]] = routes.get(lb["rule"], 0) + v
            elif n in ("popgate_verification_seconds_bucket", "popgate_request_seconds_bucket"):
                label = lb.get("scheme", lb.get("decision", ""))
                hist.setdefault((n, label), []).append((float(lb["le"]), v))
            elif n in ("popgate_verification_seconds_sum", "popgate_request_seconds_sum"):
                label = lb.get("scheme", lb.get("decision", ""))
                hsum[(n.replace("_sum", "_bucket"), label)] = v
    for (n, label), buckets in hist.items():
        buckets.sort()
        count = buckets[-1][1] if buckets else 0
        if not count:
            continue
        entry = {
            "count": count,
            "p50_ms": _ms(_quantile(buckets, 0.5)),
            "p95_ms": _ms(_quantile(buckets, 0.95)),
            "mean_ms": round(hsum.get((n, label), 0.0) / count * 1000, 3),
        }
        target = "verification" if n.startswith("popgate_verification") else "latency"
        s[target][label] = entry
    s["routes"] = [
        {"rule": r, "requests": v}
        for r, v in sorted(routes.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_ROUTES]
    ]
    return s


# -- the admin routes and the route counter --------------------------------------


def _route_counter(metrics: Metrics) -> Counter:
    return Counter(
        ROUTE_METRIC,
        "Requests by policy rule name and status class",
        ["rule", "code"],
        registry=metrics.registry,
    )


def status_extension(registry: Registry, services: Services) -> None:
    """Register ``/status`` and ``/status.json`` on the admin app and count
    requests per policy rule (``popgate_route_requests_total``)."""
    metrics: Metrics = services.metrics
    counter = _route_counter(metrics)
    children: dict[tuple[str, int], Any] = {}
    prefix = "/.well-known/popgate/"

    def count(ctx: Any, response: web.StreamResponse) -> None:
        rule = ctx.rule or ("(popgate)" if ctx.request.path.startswith(prefix) else "(none)")
        code = response.status // 100
        child = children.get((rule, code))
        if child is None:
            child = children[(rule, code)] = counter.labels(rule, f"{code}xx")
        child.inc()

    registry.observers.append(count)
    page = (STATIC / "status.html").read_bytes()

    async def status_page(request: web.Request) -> web.Response:
        return web.Response(
            body=page, content_type="text/html", charset="utf-8", headers={"Cache-Control": "no-store"}
        )

    async def status_json(request: web.Request) -> web.Response:
        summary = summarize(scrape_registry(metrics))
        return web.Response(
            body=json.dumps(summary).encode(),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    registry.admin_routes.append(("GET", "/status", status_page))
    registry.admin_routes.append(("GET", "/status.json", status_json))
