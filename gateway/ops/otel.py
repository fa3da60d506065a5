"""OpenTelemetry tracing, when ``[tracing]`` is on (:mod:`gateway.ops.tracing`).

A request the sampler leaves out gets its server span only (not recorded, but its
context still reaches the origin, flagged not sampled): the children are skipped.

Imported only then (``popgate[tracing]`` installs the packages). :class:`Tracing` owns a
tracer provider of its own (no global state: two gateways in one process trace
apart), exporting over OTLP/HTTP in batches. It hands the gateway traced variants of
what it builds: the entry handler (a ``SERVER`` span per request, continuing the
client's W3C trace context), the pipeline (a span per stage), evidence schemes (a span
per check), the store (a span per call) and the forwarder (a ``CLIENT`` span around the
upstream exchange whose ``traceparent`` the origin receives, replacing the client's).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiohttp import web
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from popgate.gateway.http.proxy import Forwarder
from popgate.gateway.http.upstream import UpstreamClient
from popgate.gateway.ops.config import Config
from popgate.gateway.ops.tracing import TracingSettings
from popgate.gateway.pipeline.context import ALLOW, Attestation, Context, Pipeline, Stage
from popgate.gateway.pipeline.decisions import Decision
from popgate.gateway.schemes import EvidenceScheme
from popgate.gateway.stores.base import Store

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
TRACE_HEADERS = frozenset({"traceparent", "tracestate"})


class Tracing:
    """The tracer and the traced building blocks; :meth:`close` flushes and stops export."""

    def __init__(self, settings: TracingSettings, provider: TracerProvider | None = None) -> None:
        if provider is None:
            sampler = ParentBased(TraceIdRatioBased(settings.sample_ratio))
            resource = Resource.create({"service.name": settings.service_name})
            provider = TracerProvider(resource=resource, sampler=sampler)
            exporter = OTLPSpanExporter(endpoint=settings.endpoint, timeout=settings.export_timeout)
            provider.add_span_processor(BatchSpanProcessor(exporter))
        self.provider = provider
        self.tracer = provider.get_tracer("popgate")
        self.propagator = TraceContextTextMapPropagator()

    def entry(self, handle: Handler) -> Handler:
        """``handle`` inside a ``SERVER`` span named after the method."""
        tracer, extract = self.tracer, self.propagator.extract

        async def traced(request: web.BaseRequest) -> web.StreamResponse:
            parent = extract(request.headers)
            with tracer.start_as_current_span(
                f"{request.method}",
                context=parent,
                kind=SpanKind.SERVER,
                attributes={"http.request.method": request.method},
            ) as span:
                response = await handle(request)
                span.set_attribute("http.response.status_code", response.status)
                if response.status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                return response

        return traced

    def observe(self, ctx: Context, response: web.StreamResponse) -> None:
        """An observer: what popgate decided, on the request span (no identifiers)."""
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attributes(
                {
                    "popgate.class": ctx.klass,
                    "popgate.decision": ctx.decision.kind if ctx.decision is not None else "none",
                    "popgate.rule": ctx.rule,
                    "popgate.evidence": ctx.evidence_kind,
                    "http.route": ctx.route,
                }
            )

    def pipeline(self, stages: Sequence[Stage]) -> Pipeline:
        return TracedPipeline(stages, self.tracer)

    def scheme(self, scheme: EvidenceScheme) -> EvidenceScheme:
        return TracedScheme(scheme, self.tracer)

    def store(self, store: Store) -> Store:
        return TracedStore(store, self.tracer)

    def forwarder(self, config: Config, upstream: UpstreamClient) -> Forwarder:
        return TracedForwarder(config, upstream, tracing=self)

    async def close(self) -> None:
        await asyncio.to_thread(self.provider.shutdown)


class TracedPipeline(Pipeline):
    """The pipeline with a span per stage (``popgate.stage.<Name>``)."""

    __slots__ = ("spans", "tracer")

    def __init__(self, stages: Sequence[Stage], tracer: trace.Tracer) -> None:
        super().__init__(stages)
        self.tracer = tracer
        self.spans = tuple(f"popgate.stage.{n}" for n in self.names)

    async def run(self, ctx: Context) -> Decision:
        if not trace.get_current_span().is_recording():
            return await super().run(ctx)  # a request the sampler left out: no child spans
        start = self.tracer.start_as_current_span
        for stage, name in zip(self.stages, self.spans):
            with start(name) as span:
                decision = await stage(ctx)
                if decision is not None:
                    span.set_attribute("popgate.decision", decision.kind)
                    ctx.decision = decision
                    return decision
        ctx.decision = ALLOW
        return ALLOW


class TracedScheme:
    """An evidence scheme whose checks are spans (``popgate.verify.<scheme>``)."""

    def __init__(self, inner: EvidenceScheme, tracer: trace.Tracer) -> None:
        self.inner, self.tracer, self.name = inner, tracer, inner.name
        self.span = f"popgate.verify.{inner.name}"

    def extract(self, request: web.BaseRequest) -> Any | None:
        return self.inner.extract(request)

    async def verify(self, ctx: Context, evidence: Any) -> Attestation:
        if not trace.get_current_span().is_recording():
            return await self.inner.verify(ctx, evidence)
        with self.tracer.start_as_current_span(self.span) as span:
            try:
                return await self.inner.verify(ctx, evidence)
            except Exception as exc:
                span.set_attribute("popgate.reason", getattr(exc, "reason", type(exc).__name__))
                raise


class TracedStore:
    """The store with a span per call (``popgate.store.<method>``; keys are not recorded)."""

    def __init__(self, inner: Store, tracer: trace.Tracer) -> None:
        self._inner, self._tracer = inner, tracer

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not asyncio.iscoroutinefunction(attr):
            return attr
        tracer, span_name = self._tracer, f"popgate.store.{name}"

        @functools.wraps(attr)
        async def traced(*args: Any, **kwargs: Any) -> Any:
            if not trace.get_current_span().is_recording():
                return await attr(*args, **kwargs)
            with tracer.start_as_current_span(span_name, kind=SpanKind.CLIENT):
                return await attr(*args, **kwargs)

        return traced


class TracedForwarder(Forwarder):
    """The upstream exchange in a ``CLIENT`` span whose context the origin receives."""

    def __init__(self, *args: Any, tracing: Tracing, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracer, self.inject = tracing.tracer, tracing.propagator.inject
        self.dropped = self.dropped | TRACE_HEADERS  # the client's context is replaced by ours

    def request_headers(self, ctx: Context, skip: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
        headers = super().request_headers(ctx, skip)
        carrier: dict[str, str] = {}
        self.inject(carrier)
        headers.extend(carrier.items())
        return headers

    async def forward(self, ctx: Context) -> web.StreamResponse:
        if not trace.get_current_span().is_recording():
            return await super().forward(ctx)  # the server span's context goes to the origin
        with self.tracer.start_as_current_span("popgate.upstream", kind=SpanKind.CLIENT) as span:
            response = await super().forward(ctx)
            span.set_attribute("http.response.status_code", response.status)
            return response
