"""Wiring: :func:`build_app` builds everything once from a validated config.

Nothing is global: the store, clock, metrics, upstream client and process
pool are injected, so tests can pass a memory store, a fake clock and a real
local upstream. The result, :class:`Gateway`, has one request handler that
runs the pipeline and then proxies or answers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from popgate.gateway.errors import GatewayError, StoreFailure
from popgate.gateway.http.headers import client_address, parse_ip
from popgate.gateway.http.lean_upstream import LeanUpstream
from popgate.gateway.http.proxy import Forwarder
from popgate.gateway.http.upstream import AiohttpUpstream, UpstreamClient
from popgate.gateway.ops.config import Config
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.pipeline import stages
from popgate.gateway.pipeline.context import Context, Pipeline
from popgate.gateway.pipeline.decisions import Allow, WayOut
from popgate.gateway.pipeline.responses import HtmlChallenge, decision_response, error_response, problem
from popgate.gateway.schemes import EvidenceScheme
from popgate.gateway.schemes.session import SessionScheme
from popgate.gateway.stores.base import Store, StoreUnavailable
from popgate.gateway.stores.failure import FailurePolicy
from popgate.verifiers.session import SessionCodec

log = logging.getLogger("popgate")
Endpoint = Callable[[web.BaseRequest, Context], Awaitable[web.StreamResponse]]
ENDPOINT_PREFIX = "/.well-known/popgate/"
NO_PEER = ipaddress.IPv4Address(0)  # the peer of a request without an IP peer (unix socket, tests)


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


class PolicyHolder:
    """Holds the current policy; swapping ``policy`` is atomic (reload)."""

    def __init__(self, policy: stages.Policy) -> None:
        self.policy = policy


class Gateway:
    """The assembled gateway: call :meth:`handle` for each request."""

    def __init__(self, config: Config, services: Services, upstream: UpstreamClient) -> None:
        self.config = config
        self.services = services
        self.metrics = services.metrics
        self.clock = services.clock
        self.upstream = upstream
        self.forwarder = Forwarder(config, upstream)
        self.session_scheme = SessionScheme(
            services.sessions, config.sessions.cookie_name, services.store, services.failure
        )
        self.schemes: list[EvidenceScheme] = [self.session_scheme]
        self.way_out_providers: list[Callable[[Context], WayOut | None]] = []
        self.endpoints: dict[str, Endpoint] = {}
        self.enforcers: list[stages.Enforcer] = []
        self.admin_routes: list[tuple[str, str, Any]] = []
        # called with (ctx, response) after every request (extensions: per-route counters)
        self.observers: list[Callable[[Context, web.StreamResponse], None]] = []
        self.heuristics: Callable[[Context], str | None] | None = None
        self.html_challenge: HtmlChallenge | None = None
        self.policy = PolicyHolder(stages.ClassActions(config.policy.actions, self.ways_out))
        self.pipeline: Pipeline | None = None
        self.trusted = config.trusted_proxies

    def ways_out(self, ctx: Context) -> tuple[WayOut, ...]:
        """Every way out the configured schemes offer for this request."""
        ways = (provider(ctx) for provider in self.way_out_providers)
        return tuple(w for w in ways if w is not None)

    def build_pipeline(self) -> Pipeline:
        """Freeze the stages; call after extensions have registered."""
        self.pipeline = Pipeline(
            [
                stages.Extract(self.schemes),
                stages.Precheck(self.config.limits),
                stages.Verify(self.schemes, self.metrics),
                stages.Classify(self.heuristics),
                stages.Decide(self.policy),
                stages.Enforce(self.enforcers),
            ]
        )
        return self.pipeline

    def context(self, request: web.BaseRequest) -> Context:
        peer = parse_ip(request.remote or "") or NO_PEER
        if self.trusted:
            client = client_address(peer, request.headers.getall("X-Forwarded-For", ()), self.trusted)
        else:
            client = peer
        return Context(request, self.clock(), client)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        """Run the pipeline, then proxy or answer. Never lets an error escape."""
        metrics = self.metrics
        metrics.inflight.inc()
        started = time.perf_counter()
        ctx = self.context(request)
        decision = "error"
        try:
            if request.path.startswith(ENDPOINT_PREFIX):
                decision = "endpoint"
                response = await self._endpoint(request, ctx)
            else:
                if self.pipeline is None:
                    raise RuntimeError("build_pipeline() was not called")
                verdict = await self.pipeline.run(ctx)
                decision = verdict.kind
                if isinstance(verdict, Allow):
                    response = await self.forwarder.forward(ctx)
                else:
                    response = decision_response(request, verdict, self.html_challenge)
                    response.headers.extend(ctx.response_headers)
        except GatewayError as exc:
            if exc.status >= 500:
                metrics.upstream_errors.labels(exc.reason).inc()
            log.info("%s %s -> %d %s: %s", request.method, request.path, exc.status, exc.reason, exc.detail)
            response = error_response(request, exc)
        except StoreUnavailable as exc:
            # a store call no failure mode guarded: fail closed, never a 500
            metrics.store_errors.labels("unguarded").inc()
            log.warning("store unavailable for %s %s: %s", request.method, request.path, exc)
            response = error_response(request, StoreFailure(str(exc)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error for %s %s", request.method, request.path)
            response = problem(request, 500, "internal_error", "Internal error")
        finally:
            metrics.inflight.dec()
        for hook in ctx.after_response:
            hook(response)
        for observe in self.observers:
            observe(ctx, response)
        metrics.count_request(ctx.klass, decision, response.status, time.perf_counter() - started)
        return response

    async def _endpoint(self, request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        handler = self.endpoints.get(request.path)
        if handler is None:
            return problem(
                request,
                404,
                "no_such_endpoint",
                "Not found",
                f"popgate endpoints: {', '.join(sorted(self.endpoints))}",
            )
        return await handler(request, ctx)

    async def close(self) -> None:
        for cleanup in reversed(self.services.cleanups):
            try:
                await cleanup()
            except Exception:
                log.exception("cleanup failed")
        if self.services.http is not None:
            await self.services.http.close()
        await self.upstream.close()
        await self.forwarder.websockets.close()


Extension = Callable[[Gateway, Services], None]


def upstream_client(config: Config) -> UpstreamClient:
    """The lean client for http origins (default), aiohttp's for https or on request."""
    if config.upstream_client == "lean" and config.upstream.scheme == "http":
        return LeanUpstream(config.upstream, config.limits)
    return AiohttpUpstream(config.upstream, config.limits)


def build_app(
    config: Config,
    *,
    store: Store,
    clock: Callable[[], float] = time.time,
    metrics: Metrics | None = None,
    upstream: UpstreamClient | None = None,
    executor: Executor | None = None,
    extensions: list[Extension] | None = None,
) -> Gateway:
    """Build a gateway from ``config`` and injected services.

    ``extensions`` (default: :func:`gateway.extensions.default_extensions`)
    add evidence schemes, endpoints, enforcers and the policy engine.
    """
    metrics = metrics or Metrics()
    keys = config.sessions.keys
    services = Services(
        config=config,
        store=store,
        clock=clock,
        metrics=metrics,
        sessions=SessionCodec(keys, config.sessions.signing_kid),
        failure=FailurePolicy(config.store, metrics),
        executor=executor,
        subject_key=config.sessions.subject_key,
    )
    gateway = Gateway(config, services, upstream or upstream_client(config))
    if extensions is None:
        from popgate.gateway.extensions import default_extensions

        extensions = default_extensions()
    for extend in extensions:
        extend(gateway, services)
    gateway.build_pipeline()
    return gateway
