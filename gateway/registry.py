"""Where extensions register what they add to a gateway.

An extension is ``(registry, services) -> None``. :class:`Services` are what it
builds with (config, store, clock, metrics, ...); :class:`Registry` holds the
typed registration points it fills in (evidence schemes, endpoints, enforcers,
way-out providers, reload hooks, background tasks, admin routes, observers,
heuristics, the HTML challenge page and the policy). :func:`gateway.app.build_app`
runs the extensions, then builds the :class:`gateway.app.Gateway` from the
filled-in registry. Nothing here imports the app, so extensions never do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from popgate.gateway.ops.config import Config
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import WayOut
from popgate.gateway.pipeline.responses import HtmlChallenge
from popgate.gateway.pipeline.stages import Enforcer, Policy
from popgate.gateway.schemes import EvidenceScheme, Extractor
from popgate.gateway.schemes.session import SessionScheme
from popgate.gateway.stores.base import Store
from popgate.gateway.stores.failure import FailurePolicy
from popgate.policies.model import Match
from popgate.verifiers.session import SessionCodec

Endpoint = Callable[[web.BaseRequest, Context], Awaitable[web.StreamResponse]]
# The matched policy rule is None under the core's per-class policy.
WayOutProvider = Callable[[Context, Match | None], WayOut | None]
Observer = Callable[[Context, web.StreamResponse], None]
Heuristics = Callable[[Context], str | None]
PaymentProbe = Callable[[Context], bool]  # does the request carry a payment a rail would take?


@dataclass
class Services:
    """What extensions get to build their schemes, endpoints and stages."""

    config: Config
    store: Store
    clock: Callable[[], float]
    metrics: Metrics
    sessions: SessionCodec
    failure: FailurePolicy
    executor: Executor | None
    subject_key: bytes
    http: aiohttp.ClientSession | None = None
    cleanups: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def outbound(self) -> aiohttp.ClientSession:
        """A shared client session for outbound calls (JWKS, facilitator, RPC)."""
        if self.http is None:
            self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self.http


class Background(Protocol):
    """A task that runs while the gateway serves: started by ``Gateway.start()``,
    stopped by ``Gateway.close()`` (the server and the test harness call both)."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Registry:
    """The registration points an extension fills in; see the module doc."""

    def __init__(self, session: SessionScheme) -> None:
        self.session = session  # extensions add session binders to it
        self.schemes: list[EvidenceScheme] = [session]
        # evidence the Extract stage pulls out but no Verify step checks: an enforcer
        # settles it against the decision (payments, against the price charged)
        self.deferred: list[Extractor] = []
        self.endpoints: dict[str, Endpoint] = {}
        self.enforcers: list[Enforcer] = []
        self.way_out_providers: list[WayOutProvider] = []
        self.reload_hooks: list[Callable[[], bool]] = []
        self.background: list[Background] = []
        self.admin_routes: list[tuple[str, str, Any]] = []
        self.observers: list[Observer] = []  # called with (ctx, response) after every request
        self.payment_probes: list[PaymentProbe] = []
        self.heuristics: Heuristics | None = None
        self.html_challenge: HtmlChallenge | None = None
        self.policy: Policy | None = None  # None: the core's one action per class
        # Does the policy decide this request from its method, host and path alone
        # (forward-auth verdict reuse)? None: only with the core's per-class policy.
        self.target_decides: Callable[[Context], bool] | None = None

    def ways_out(self, ctx: Context, match: Match | None) -> tuple[WayOut, ...]:
        """Every way out the registered providers offer for this request."""
        ways = (provider(ctx, match) for provider in self.way_out_providers)
        return tuple(w for w in ways if w is not None)

    def carries_payment(self, ctx: Context) -> bool:
        """Does the request bring a payment one of the registered rails would take?"""
        return any(probe(ctx) for probe in self.payment_probes)


Extension = Callable[[Registry, Services], None]
