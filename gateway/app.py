"""Wiring: :func:`build_app` builds everything once from a validated config.

Nothing is global: the store, clock, metrics, upstream client, process
pool and the extensions are injected, so tests can pass a memory store, a
fake clock and a real local upstream. Extensions fill in a
:class:`gateway.registry.Registry`; the result, :class:`Gateway`, has one
request handler that runs the pipeline and then proxies or answers, and a
``start()``/``close()`` pair for its background tasks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor

from aiohttp import web

from popgate.gateway.errors import GatewayError, StoreFailure
from popgate.gateway.http.auth_wire import Encoded
from popgate.gateway.http.forward_auth import AuthCall, auth_call, is_auth_path, original_request
from popgate.gateway.http.headers import IPAddress, client_address, parse_ip
from popgate.gateway.http.lean_upstream import LeanUpstream
from popgate.gateway.http.proxy import Forwarder
from popgate.gateway.http.shedding import Admission
from popgate.gateway.http.upstream import AiohttpUpstream, UpstreamClient
from popgate.gateway.http.verdicts import Sealer, reuse_seconds
from popgate.gateway.http.websocket import check_handshake, is_upgrade
from popgate.gateway.ops.config import Config
from popgate.gateway.ops.logs import AccessLog
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.pipeline import stages
from popgate.gateway.pipeline.context import Context, Pipeline, Stage
from popgate.gateway.pipeline.decisions import Allow, Challenge, Decision, WayOut
from popgate.gateway.pipeline.responses import decision_response, error_response, own_headers, problem
from popgate.gateway.registry import Extension, Registry, Services
from popgate.gateway.schemes import EvidenceScheme
from popgate.gateway.schemes.session import SessionScheme
from popgate.gateway.stores.base import Store, StoreUnavailable
from popgate.gateway.stores.failure import FailurePolicy
from popgate.verifiers.session import SessionCodec

log = logging.getLogger("popgate")
ENDPOINT_PREFIX = "/.well-known/popgate/"
NO_PEER = ipaddress.IPv4Address(0)  # the peer of a request without an IP peer (unix socket, tests)


class Gateway:
    """The assembled gateway: call :meth:`handle` for each request.

    Built by :func:`build_app` from the registry the extensions filled in;
    :meth:`start` runs the registered background tasks, :meth:`close` stops
    them and releases everything.
    """

    def __init__(
        self, config: Config, services: Services, registry: Registry, upstream: UpstreamClient | None
    ) -> None:
        self.config = config
        self.services = services
        self.registry = registry
        self.metrics = services.metrics
        self.clock = services.clock
        self.upstream = upstream
        self.tracing = services.tracing  # None unless [tracing]: then the traced variants are built
        # None in forward-auth mode: the operator's proxy carries the bytes
        self.forwarder: Forwarder | None = None
        if upstream and config.upstream:
            tracing = self.tracing
            self.forwarder = tracing.forwarder(config, upstream) if tracing else Forwarder(config, upstream)
        log_settings = config.features.log
        self.access = AccessLog(log_settings) if log_settings.access or config.access_log else None
        self.trusted = config.trusted_proxies
        self.endpoints = registry.endpoints
        # endpoints outside /.well-known/popgate/ (e.g. the Portal-shaped verify API): usually none
        self.outside = frozenset(p for p in registry.endpoints if not p.startswith(ENDPOINT_PREFIX))
        self.admin_routes = registry.admin_routes
        self.html_challenge = registry.html_challenge
        policy = registry.policy or stages.ClassActions(config.policy.actions, self.ways_out)
        # swap ``policy.policy`` to change the policy (atomic; tests install their own)
        self.policy = stages.Decide(policy)
        self.pipeline = self.build_pipeline()
        overload = config.features.overload
        # admission by class under overload (gateway/http/shedding.py); None: [overload] enabled = false
        self.admission = (
            Admission(overload, self.metrics, config.sessions.cookie_name) if overload.enabled else None
        )
        if self.admission is not None:
            registry.background.append(self.admission)
        # forward-auth: the same stages, Enforce run apart (a hand-off happens before it)
        self.decide = Pipeline(self.pipeline.stages[:-1])
        self.enforce = self.pipeline.stages[-1]
        self.sealer = Sealer(config.sessions.keys, config.sessions.signing_kid)
        self.cache_ttl = config.features.forward_auth.cache_ttl
        x402 = config.features.x402  # upto routes settle after the answer: only inline can see it
        upto = frozenset(x402.upto.routes) if x402 is not None and x402.upto is not None else frozenset()
        self.inline_routes = config.features.forward_auth.inline_routes | upto
        self._started = False

    @property
    def session_scheme(self) -> SessionScheme:
        return self.registry.session

    @property
    def schemes(self) -> list[EvidenceScheme]:
        return self.registry.schemes

    @property
    def enforcers(self) -> list[stages.Enforcer]:
        return self.registry.enforcers

    def ways_out(self, ctx: Context) -> tuple[WayOut, ...]:
        """Every way out the configured schemes offer (no policy rule matched)."""
        return self.registry.ways_out(ctx, None)

    def reload(self) -> bool:
        """SIGHUP: run every reload hook; True when there were some and all succeeded."""
        results = [hook() for hook in self.registry.reload_hooks]
        return bool(results) and all(results)

    def build_pipeline(self) -> Pipeline:
        """The stages, frozen from the registry."""
        r = self.registry
        tracing = self.tracing
        checked = r.schemes if tracing is None else [tracing.scheme(s) for s in r.schemes]
        steps: list[Stage] = [
            stages.Extract([*r.schemes, *r.deferred]),
            stages.Precheck(self.config.limits),
            stages.Verify(checked, self.metrics),
            stages.Classify(r.heuristics),
            self.policy,
            stages.Enforce(r.enforcers),
        ]
        return Pipeline(steps) if tracing is None else tracing.pipeline(steps)

    @property
    def entry(self) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        """The request handler the listener calls: :meth:`handle`, in a span when tracing."""
        return self.handle if self.tracing is None else self.tracing.entry(self.handle)

    def context(self, request: web.BaseRequest) -> Context:
        peer = parse_ip(request.remote or "") or NO_PEER
        if self.trusted:
            client = client_address(peer, request.headers.getall("X-Forwarded-For", ()), self.trusted)
        else:
            client = peer
        return Context(request, self.clock(), client)

    async def handle(
        self, request: web.BaseRequest, call: AuthCall | None = None, client: IPAddress | None = None
    ) -> web.StreamResponse:
        """Admit the request by class (or shed it), then :meth:`serve` it. ``call`` and
        ``client``: ``request`` is already the original request behind that forward-auth
        call from a trusted proxy, rebuilt by the auth listener (gateway.http.auth_listener)."""
        admission = self.admission
        if admission is None:
            return await self.serve(request, call, client)
        klass = admission.classify(request, auth=call is not None)
        if not await admission.enter(klass):
            return admission.shed(request, klass, proxy=call is not None or is_auth_path(request.path))
        try:
            return await self.serve(request, call, client)
        finally:
            admission.leave(klass)

    async def serve(
        self, request: web.BaseRequest, call: AuthCall | None = None, client: IPAddress | None = None
    ) -> web.StreamResponse:
        """Run the pipeline, then proxy or answer. Never lets an error escape."""
        metrics = self.metrics
        metrics.in_flight += 1
        started = time.perf_counter()
        ctx = self.context(request) if client is None else Context(request, self.clock(), client)
        decision = "error"
        auth: AuthCall | None = None
        response: web.StreamResponse
        own = True  # False once the origin answers: its headers are its own
        try:
            path = ctx.target.path  # a bad target or host is a 400 (CONNECT a 405) before anything else
            if call is None and is_upgrade(request):
                check_handshake(request)  # before any charge or upstream socket
            if call is not None:  # the auth listener rebuilt the original request already
                auth = call
                response, decision = await self._forward_auth(auth, ctx)
            elif is_auth_path(path):
                auth = auth_call(request, self.trusted)
                if auth.style != "render":
                    ctx = Context(original_request(request, ctx.client_ip), ctx.now, ctx.client_ip)
                response, decision = await self._forward_auth(auth, ctx)
            elif path.startswith(ENDPOINT_PREFIX) or (self.outside and path in self.outside):
                decision = "endpoint"
                response = await self._endpoint(path, request, ctx)
            elif self.forwarder is None:
                response = problem(
                    request, 404, "auth_mode", "Not found", "popgate runs in forward-auth mode here."
                )
            else:
                verdict = await self.pipeline.run(ctx)
                decision = verdict.kind
                if isinstance(verdict, Allow):
                    own = False
                    response = await self.forwarder.forward(ctx)
                else:
                    response = self._refuse(ctx, verdict)
        except GatewayError as exc:
            if exc.status >= 500:
                metrics.upstream_errors.labels(exc.reason).inc()
            log.info("%s %s -> %d %s: %s", request.method, request.path, exc.status, exc.reason, exc.detail)
            response = error_response(ctx.request, exc)
        except StoreUnavailable as exc:
            # a store call no failure mode guarded: fail closed, never a 500
            metrics.store_errors.labels("unguarded").inc()
            log.warning("store unavailable for %s %s: %s", request.method, request.path, exc)
            response = error_response(ctx.request, StoreFailure(str(exc)))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("unhandled error for %s %s", request.method, request.path)
            response = problem(ctx.request, 500, "internal_error", "Internal error")
        finally:
            metrics.in_flight -= 1
        if auth is not None:
            response = auth.finish(response, decision, self.sealer, ctx.now)
        if own and not isinstance(response, Encoded):  # an encoded answer has them already
            own_headers(response, browsers=auth is None or not auth.to_proxy(response))
        for hook in ctx.after_response:
            hook(response)
        for observe in self.registry.observers:
            observe(ctx, response)
        elapsed = time.perf_counter() - started
        metrics.count_request(ctx.klass, decision, response.status, elapsed)
        if self.access is not None:
            self.access(ctx, response, decision, elapsed)
        return response

    async def _forward_auth(self, auth: AuthCall, ctx: Context) -> tuple[web.StreamResponse, str]:
        """The verdict for the request behind a forward-auth call (:mod:`gateway.http.forward_auth`)."""
        if auth.style == "render":
            return await auth.render(ctx.request, self.sealer, ctx.now), "render"
        ctx.via_auth = True
        verdict = await self.decide.run(ctx)  # every stage but Enforce: no charge or spend yet
        if isinstance(verdict, Allow):
            route = ctx.charge.route if ctx.charge is not None else ctx.route
            if auth.style == "subrequest" and (route or ctx.route) in self.inline_routes:
                return auth.hand_off(), "inline"
            verdict = await self.enforce(ctx) or verdict
            ctx.decision = verdict
        if not isinstance(verdict, Allow):
            if isinstance(verdict, Challenge) and verdict.rendered is not None and not ctx.response_headers:
                reused = auth.reused(verdict.rendered, verdict.kind)
                if reused is not None:
                    return reused, verdict.kind
            return self._refuse(ctx, verdict), verdict.kind
        reuse = reuse_seconds(ctx, self.cache_ttl, self.registry.target_decides)
        return auth.allow(ctx, reuse), verdict.kind

    def _refuse(self, ctx: Context, verdict: Decision) -> web.Response:
        """The answer to anything but Allow: the same inline and in forward-auth mode."""
        response = decision_response(ctx.request, verdict, self.html_challenge)
        response.headers.extend(ctx.response_headers)
        return response

    async def _endpoint(self, path: str, request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        handler = self.endpoints.get(path)
        if handler is None:
            return problem(
                request,
                404,
                "no_such_endpoint",
                "Not found",
                f"popgate endpoints: {', '.join(sorted(self.endpoints))}",
            )
        return await handler(request, ctx)

    async def start(self) -> None:
        """Start the registered background tasks (needs a running loop)."""
        if self._started:
            return
        self._started = True
        for task in self.registry.background:
            await task.start()

    async def close(self) -> None:
        """Stop the background tasks, then run the cleanups and close the clients."""
        self._started = False
        for task in reversed(self.registry.background):
            try:
                await task.stop()
            except Exception:
                log.exception("stopping a background task failed")
        for cleanup in reversed(self.services.cleanups):
            try:
                await cleanup()
            except Exception:
                log.exception("cleanup failed")
        if self.services.http is not None:
            await self.services.http.close()
        if self.upstream is not None:
            await self.upstream.close()
        if self.forwarder is not None:
            await self.forwarder.websockets.close()
        if self.tracing is not None:
            await self.tracing.close()
        if self.access is not None:
            self.access.flush()


def upstream_client(config: Config) -> UpstreamClient | None:
    """The lean client for http origins (default), aiohttp's for https or on request;
    None in forward-auth mode (no origin)."""
    if config.upstream is None:
        return None
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
    extensions: Sequence[Extension],
) -> Gateway:
    """Build a gateway from ``config``, injected services and ``extensions``
    (the shipped ones: :func:`gateway.extensions.default_extensions`), which
    register evidence schemes, endpoints, enforcers and the policy engine.
    """
    metrics = metrics or Metrics()
    keys = config.sessions.keys
    tracing = None
    if config.features.tracing is not None:
        # why: OpenTelemetry is an optional extra, imported only when [tracing] is on
        from popgate.gateway.ops.otel import Tracing

        tracing = Tracing(config.features.tracing)
        store = tracing.store(store)
    services = Services(
        config=config,
        store=store,
        clock=clock,
        metrics=metrics,
        sessions=SessionCodec(keys, config.sessions.signing_kid),
        failure=FailurePolicy(config.store, metrics),
        executor=executor,
        subject_key=config.sessions.subject_key,
        tracing=tracing,
    )
    session = SessionScheme(services.sessions, config.sessions.cookie_name, store, services.failure)
    registry = Registry(session)
    for extend in extensions:
        extend(registry, services)
    if tracing is not None:
        registry.observers.append(tracing.observe)
    return Gateway(config, services, registry, upstream if upstream is not None else upstream_client(config))
