"""Prometheus metrics on an injected registry, with bounded labels only.

Label values come from small fixed sets (class, decision, scheme, reason,
route names from the policy): never a raw IP, nullifier, subject or path.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class Metrics:
    """All of popgate's instruments, registered on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "popgate_requests_total",
            "Requests by client class and decision",
            ["klass", "decision"],
            registry=r,
        )
        self.responses = Counter("popgate_responses_total", "Responses by status class", ["code"], registry=r)
        self.latency = Histogram(
            "popgate_request_seconds",
            "Time spent handling a request",
            ["decision"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.inflight = Gauge("popgate_inflight_requests", "Requests being handled", registry=r)
        # a plain count on the hot path (one event loop per process), read at scrape time
        self.in_flight = 0
        self.inflight.set_function(lambda: self.in_flight)
        self.deferred_writes = Gauge(
            "popgate_settlement_deferred_writes",
            "Bookkeeping after a settled payment that the store refused, waiting to be retried",
            registry=r,
        )
        self.upstream_errors = Counter(
            "popgate_upstream_errors_total", "Upstream failures", ["kind"], registry=r
        )
        self.evidence = Counter(
            "popgate_evidence_total",
            "Evidence checked, by scheme and result",
            ["scheme", "result"],
            registry=r,
        )
        self.verify_seconds = Histogram(
            "popgate_verification_seconds",
            "Verification time",
            ["scheme"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.sessions_issued = Counter(
            "popgate_sessions_issued_total", "Sessions issued", ["klass", "evidence"], registry=r
        )
        self.store_errors = Counter(
            "popgate_store_errors_total", "Store operations that failed", ["action"], registry=r
        )
        self.fail_open = Counter(
            "popgate_fail_open_total",
            "Actions let through while the store was unavailable",
            ["action"],
            registry=r,
        )
        self.fees = Counter(
            "popgate_fees_atomic_total", "Fees collected (atomic units)", ["rail", "route"], registry=r
        )
        self.payments = Counter(
            "popgate_payments_total", "Payment attempts by rail and result", ["rail", "result"], registry=r
        )
        self.settlements = Counter(
            "popgate_settlements_total", "x402 settlement attempts by outcome", ["outcome"], registry=r
        )
        self.difficulty = Gauge(
            "popgate_puzzle_difficulty_bits", "Current puzzle difficulty", ["scope"], registry=r
        )
        self.client_timeouts = Counter(
            "popgate_client_timeouts_total",
            "Client connections cut for a slow head or body",
            ["phase"],
            registry=r,
        )
        self.pool_queue = Gauge("popgate_verify_queue_depth", "Proofs waiting for a pool slot", registry=r)
        self.shed = Counter(
            "popgate_shed_total", "Requests refused by admission control, by class", ["klass"], registry=r
        )
        self.admitted = Gauge(
            "popgate_admitted_inflight",
            "Requests admitted and in flight, by admission class",
            ["klass"],
            registry=r,
        )
        self.loop_lag = Gauge(
            "popgate_loop_lag_seconds", "Event-loop lag seen by admission control", registry=r
        )
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram, Counter]] = {}

    def count_request(self, klass: str, decision: str, status: int, seconds: float) -> None:
        """Count one finished request (children cached per (class, decision, status
        class): this is the hot path, one lookup).

        ``seconds`` is the time to the response object (for streamed bodies,
        to the last byte written)."""
        code = status // 100
        children = self._children.get((klass, decision, code))
        if children is None:
            children = self._children[(klass, decision, code)] = (
                self.requests.labels(klass, decision),
                self.latency.labels(decision),
                self.responses.labels(f"{code}xx"),
            )
        requests, latency, responses = children
        requests.inc()
        latency.observe(seconds)
        responses.inc()
