"""The request pipeline: extract → precheck → verify → classify → decide → enforce.

A stage is an object with ``async __call__(ctx) -> Decision | None``: it
returns a decision to stop, or None to let the next stage run. Stages are
built once at start-up (:func:`gateway.app.build_pipeline`); per request only
a :class:`Context` is made. When every stage passes, the request is allowed
and :mod:`gateway.http.proxy` forwards it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from popgate.gateway.http.target import Target, request_target
from popgate.gateway.pipeline.decisions import Allow, Charge, Decision
from popgate.policies.model import Match
from popgate.verifiers.net import IPAddress, network_of
from popgate.verifiers.spend import Spend


@dataclass(slots=True)
class Attestation:
    """What verified evidence says about the client."""

    klass: str
    subject: str
    evidence: str
    charged: int = 0
    session: Any = None
    extra: Any = None
    agent: str = ""  # a verified agent's name for the policy's ``declared_agent`` (crawlers)


@dataclass(frozen=True, slots=True)
class Pending:
    """A store effect the policy stage decided on, for its enforcer to apply:
    ``spend`` presented work once (claim ``spend``, what the verifier returned),
    or take a ``throttle`` step for the matched rule."""

    kind: str  # "spend" | "throttle"
    spend: Spend | None = None


class Context:
    """Per-request state that flows through the stages.

    Decisions travel in typed fields, not in ``evidence``: ``match`` (the
    matched policy rule) and ``route``, ``charge`` (a Charge the Decide stage
    left for the payment enforcers) and ``pending`` (the policy stage's own
    store effect). ``evidence`` holds only what the schemes extracted.
    """

    __slots__ = (
        "_network",
        "_target",
        "after_response",
        "agent",
        "answer_hook",
        "attestations",
        "charge",
        "charged",
        "client_ip",
        "consumed",
        "decision",
        "evidence",
        "evidence_kind",
        "klass",
        "match",
        "now",
        "pending",
        "rejections",
        "request",
        "response_headers",
        "route",
        "rule",
        "subject",
        "via_auth",
        "weight",
    )

    def __init__(
        self, request: web.BaseRequest, now: float, client_ip: IPAddress, network: str | None = None
    ) -> None:
        self.request = request
        self.now = now
        self.client_ip = client_ip
        self._network = network
        self._target: Target | None = None
        self.evidence: dict[str, Any] = {}
        self.attestations: list[Attestation] = []
        self.rejections: list[str] = []
        self.klass = "unknown"
        self.subject = ""
        self.evidence_kind = ""
        self.charged = 0
        self.rule = ""
        self.agent = ""  # the verified agent's name (a crawler's), from the strongest attestation
        self.weight = 0  # policy weight schemes added (a crawler's name from an address not theirs)
        self.response_headers: list[tuple[str, str]] = []
        self.after_response: list[Any] = []
        # awaited with (status, origin headers) before the origin's answer is sent:
        # may edit the headers, add to response_headers, or raise a GatewayError instead
        self.answer_hook: Callable[[int, list[tuple[str, str]]], Awaitable[None]] | None = None
        self.via_auth = False  # a forward-auth call: popgate never sees the origin's answer
        self.decision: Decision | None = None
        self.match: Match | None = None  # the policy rule that matched (not set for allow)
        self.route = ""  # the matched rule's route
        self.charge: Charge | None = None  # left by Decide for the payment enforcers
        self.pending: Pending | None = None  # the policy stage's spend or throttle
        self.consumed: set[str] | None = None  # request headers popgate used up: not forwarded

    @property
    def network(self) -> str:
        """The client's /24 or /64, computed on first use (most requests never ask)."""
        if self._network is None:
            self._network = network_of(self.client_ip)
        return self._network

    @network.setter
    def network(self, value: str) -> None:
        self._network = value

    @property
    def target(self) -> Target:
        """The request's target, host and normalized path (:mod:`gateway.http.target`);
        read first thing in ``Gateway.handle``, which turns a bad one into a 400/405."""
        if self._target is None:
            self._target = request_target(self.request)
        return self._target

    def consume(self, header: str) -> None:
        """Mark a request header as popgate's own evidence, not for the origin."""
        if self.consumed is None:
            self.consumed = set()
        self.consumed.add(header.lower())

    def origin_headers(self) -> list[tuple[str, str]]:
        """The ``PoP-*`` headers that tell the origin who the client is."""
        headers = [("PoP-Class", self.klass)]
        if self.subject:
            headers.append(("PoP-Subject", self.subject))
        if self.evidence_kind:
            headers.append(("PoP-Evidence", self.evidence_kind))
        if self.charged:
            headers.append(("PoP-Charged", str(self.charged)))
        if self.klass == "backed-agent" and self.subject:
            headers.append(("PoP-Backed-By", self.subject))  # the person the agent acts for
        return headers


class Stage(Protocol):
    async def __call__(self, ctx: Context) -> Decision | None: ...


ALLOW = Allow()


class Pipeline:
    """Runs stages in order; the first decision wins, else Allow."""

    __slots__ = ("names", "stages")

    def __init__(self, stages: Sequence[Stage]) -> None:
        self.stages = tuple(stages)
        self.names = tuple(type(s).__name__ for s in stages)

    async def run(self, ctx: Context) -> Decision:
        for stage in self.stages:
            decision = await stage(ctx)
            if decision is not None:
                ctx.decision = decision
                return decision
        ctx.decision = ALLOW
        return ALLOW  # a pending Charge was settled (Enforce returns it otherwise)
