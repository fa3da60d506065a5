"""The pipeline's stages, in order: extract, precheck, verify, classify,
decide, enforce. Each is built once from config; per request it only reads
the context and returns a decision to stop, or None.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from popgate.gateway.errors import HeadersTooLarge, PayloadTooLarge
from popgate.gateway.ops.config import Limits
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import Challenge, Charge, Decision, Deny, WayOut
from popgate.gateway.schemes import EvidenceScheme, Extractor
from popgate.verifiers.errors import VerificationError

log = logging.getLogger("popgate.pipeline")

# Strongest first: a request with several kinds of evidence is classed by the best.
CLASS_RANK = {"human": 5, "account": 4, "backed-agent": 3, "verified-agent": 2, "agent": 1, "unknown": 0}


class Extract:
    """Pull each scheme's evidence out of the request (no I/O)."""

    __slots__ = ("schemes",)

    def __init__(self, schemes: Sequence[Extractor]) -> None:
        self.schemes = tuple(schemes)

    async def __call__(self, ctx: Context) -> Decision | None:
        request = ctx.request
        for scheme in self.schemes:
            evidence = scheme.extract(request)
            if evidence is not None:
                ctx.evidence[scheme.name] = evidence
        return None


class Precheck:
    """Cheap gates first: header count and size, declared body size."""

    __slots__ = ("max_body", "max_bytes", "max_count")

    def __init__(self, limits: Limits) -> None:
        self.max_count = limits.max_header_count
        self.max_bytes = limits.max_header_bytes
        self.max_body = limits.max_body_bytes

    async def __call__(self, ctx: Context) -> Decision | None:
        request = ctx.request
        raw = request.raw_headers
        if len(raw) > self.max_count:
            raise HeadersTooLarge(f"{len(raw)} header fields", public="Too many header fields.")
        size = 0
        for name, value in raw:
            size += len(name) + len(value) + 4
        if size > self.max_bytes:
            raise HeadersTooLarge(f"{size} header bytes", public="Header fields too large.")
        length = request.content_length
        if length is not None and length > self.max_body:
            raise PayloadTooLarge(f"content-length {length}", public="Request body too large.")
        return None


class Verify:
    """Verify each piece of evidence; a failure is recorded, not fatal.

    Counts every verdict in ``popgate_evidence_total{scheme,result}`` and times
    the schemes listed in ``TIMED`` (the proof pool, zkLogin and Web Bot Auth
    time themselves; a session check is one HMAC and stays untimed).
    """

    TIMED = frozenset({"puzzle", "hashcash"})
    __slots__ = ("_ok", "_timers", "metrics", "schemes")

    def __init__(self, schemes: Sequence[EvidenceScheme], metrics: Metrics) -> None:
        self.schemes = tuple(schemes)
        self.metrics = metrics
        self._ok: dict[str, Any] = {}
        self._timers: dict[str, Any] = {}

    async def __call__(self, ctx: Context) -> Decision | None:
        if not ctx.evidence:
            return None
        for scheme in self.schemes:
            name = scheme.name
            evidence = ctx.evidence.get(name)
            if evidence is None:
                continue
            started = time.perf_counter() if name in self.TIMED else 0.0
            try:
                ctx.attestations.append(await scheme.verify(ctx, evidence))
                ok = self._ok.get(name)
                if ok is None:
                    ok = self._ok[name] = self.metrics.evidence.labels(name, "ok")
                ok.inc()
            except VerificationError as exc:
                ctx.rejections.append(exc.reason)
                self.metrics.evidence.labels(name, exc.reason).inc()
                log.debug("%s evidence rejected: %s (%s)", name, exc.reason, exc.detail)
            if started:
                timer = self._timers.get(name)
                if timer is None:
                    timer = self._timers[name] = self.metrics.verify_seconds.labels(name)
                timer.observe(time.perf_counter() - started)
        return None


class Classify:
    """Class and subject from the strongest attestation; ``unknown`` without one."""

    __slots__ = ("heuristics",)

    def __init__(self, heuristics: Callable[[Context], str | None] | None = None) -> None:
        self.heuristics = heuristics

    async def __call__(self, ctx: Context) -> Decision | None:
        if ctx.attestations:
            best = max(ctx.attestations, key=lambda a: CLASS_RANK.get(a.klass, 0))
            ctx.klass, ctx.subject, ctx.evidence_kind = best.klass, best.subject, best.evidence
            ctx.agent = best.agent
            ctx.charged = sum(a.charged for a in ctx.attestations)
        elif self.heuristics is not None:
            ctx.klass = self.heuristics(ctx) or "unknown"
        return None


class Policy(Protocol):
    """Decides a classified request; None lets it through."""

    def decide(self, ctx: Context) -> Decision | None: ...


class PolicyHolder(Protocol):
    """Anything with a ``policy`` (the gateway: swapped atomically on reload)."""

    @property
    def policy(self) -> Policy: ...


class ClassActions:
    """The core's policy: one action per class (allow, challenge, deny).

    The policy engine in :mod:`policies` replaces this with route rules.
    """

    def __init__(self, actions: dict[str, str], ways_out: Callable[[Context], tuple[WayOut, ...]]) -> None:
        self.actions = dict(actions)
        self.ways_out = ways_out

    def decide(self, ctx: Context) -> Decision | None:
        action = self.actions.get(ctx.klass, "challenge")
        if action == "allow":
            return None
        if action == "deny":
            return Deny()
        reason = ctx.rejections[0] if ctx.rejections else "evidence_required"
        return Challenge(reason=reason, ways_out=self.ways_out(ctx))


class Decide:
    """Ask the current policy. A ``Charge`` does not stop the pipeline: it is
    left in ``ctx.charge`` for the payment enforcers to settle.

    ``policy`` may be swapped at any time (one assignment: atomic)."""

    __slots__ = ("policy",)

    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    async def __call__(self, ctx: Context) -> Decision | None:
        decision = self.policy.decide(ctx)
        if isinstance(decision, Charge):
            ctx.charge = decision
            return None
        return decision


Enforcer = Callable[[Context], Awaitable[Decision | None]]


class Enforce:
    """Atomic store effects of the decision (spends, debits, budgets).

    A payment enforcer that settles a pending ``Charge`` sets ``ctx.charged``
    and ``ctx.charge = None``; a Charge nobody paid is answered with 402.
    """

    __slots__ = ("enforcers",)

    def __init__(self, enforcers: Sequence[Enforcer] = ()) -> None:
        self.enforcers = list(enforcers)

    async def __call__(self, ctx: Context) -> Decision | None:
        for enforce in self.enforcers:
            decision = await enforce(ctx)
            if decision is not None:
                return decision
        return ctx.charge
