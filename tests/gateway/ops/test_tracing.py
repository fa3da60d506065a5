"""OpenTelemetry tracing, asserted with the SDK's in-memory exporter: a server span per
request continuing the client's trace, a child per stage, per evidence check and per
store call, and the upstream span's context at the origin as traceparent."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from popgate.gateway.http.proxy import Forwarder
from popgate.gateway.ops import tracing
from popgate.gateway.ops.config import ConfigError, load_config
from popgate.gateway.pipeline.context import Pipeline
from tests.conftest import session_token, url_of
from tests.support.servers import free_port, write_config

CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_PARENT = "b7ad6b7169203331"


def tracing_toml() -> str:
    # a collector nobody runs: spans are read from the in-memory exporter instead
    return f'[tracing]\nendpoint = "http://127.0.0.1:{free_port()}/v1/traces"\nexport_timeout = 0.5\n'


async def traced_gateway(gateway_factory, upstream):
    gw = await gateway_factory(upstream, extra=tracing_toml())
    exporter = InMemorySpanExporter()
    gw.gateway.tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    return gw, exporter


async def test_request_span_stage_children_and_traceparent_at_origin(upstream, gateway_factory, http):
    gw, exporter = await traced_gateway(gateway_factory, upstream)
    token = session_token(gw, "human", subject="human:t", budget=5)  # a budget: one store call
    headers = {
        "Authorization": f"PoP {token}",
        "traceparent": f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01",
        "tracestate": "client=1",
    }
    async with http.get(url_of(gw, "/api/things"), headers=headers) as r:
        assert r.status == 200
        seen = (await r.json())["headers"]
    spans = exporter.get_finished_spans()
    by_name = {s.name: s for s in spans}
    server = by_name["GET"]
    assert server.kind == SpanKind.SERVER
    assert server.parent is not None and server.parent.span_id == int(CLIENT_PARENT, 16)
    assert all(s.context.trace_id == int(CLIENT_TRACE, 16) for s in spans)
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["popgate.class"] == "human"
    assert server.attributes["popgate.decision"] == "allow"
    stages = [s for s in spans if s.name.startswith("popgate.stage.")]
    assert {s.name for s in stages} == {
        "popgate.stage.Extract",
        "popgate.stage.Precheck",
        "popgate.stage.Verify",
        "popgate.stage.Classify",
        "popgate.stage.Decide",
        "popgate.stage.Enforce",
    }
    assert all(s.parent.span_id == server.context.span_id for s in stages)
    verify = by_name["popgate.verify.session"]
    assert verify.parent.span_id == by_name["popgate.stage.Verify"].context.span_id
    store = by_name["popgate.store.incr"]
    assert store.parent.span_id == verify.context.span_id
    upstream_span = by_name["popgate.upstream"]
    assert upstream_span.kind == SpanKind.CLIENT and upstream_span.parent.span_id == server.context.span_id
    # the origin gets popgate's upstream span as parent, in the client's trace; the client's
    # own traceparent and tracestate are replaced, not forwarded beside ours
    version, trace_id, parent_id, flags = seen["traceparent"].split("-")
    assert (version, trace_id, flags) == ("00", CLIENT_TRACE, "01")
    assert int(parent_id, 16) == upstream_span.context.span_id
    assert seen.get("tracestate") == "client=1"  # W3C: the list is carried on, unchanged by us
    assert token not in str([dict(s.attributes or {}) for s in spans])


async def test_refusal_is_traced_and_new_trace_started(upstream, gateway_factory, http):
    """A 402 without a client trace: a new trace, the Decide stage carries the decision."""
    gw, exporter = await traced_gateway(gateway_factory, upstream)
    async with http.get(url_of(gw, "/x"), headers={"traceparent": "garbage"}) as r:
        assert r.status == 402
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    assert by_name["GET"].parent is None
    assert by_name["popgate.stage.Decide"].attributes["popgate.decision"] == "challenge"
    assert by_name["GET"].attributes["popgate.decision"] == "challenge"
    assert "popgate.upstream" not in by_name


async def test_unsampled_requests_record_nothing_but_propagate(upstream, gateway_factory, http):
    """sample_ratio = 0: no span is recorded, the origin still gets a traceparent (not sampled)."""
    gw = await gateway_factory(upstream, extra=tracing_toml() + "sample_ratio = 0.0\n")
    exporter = InMemorySpanExporter()
    gw.gateway.tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    token = session_token(gw, "human", subject="human:t")
    async with http.get(url_of(gw, "/"), headers={"Authorization": f"PoP {token}"}) as r:
        seen = (await r.json())["headers"]
    assert exporter.get_finished_spans() == ()
    version, _, _, flags = seen["traceparent"].split("-")
    assert version == "00" and int(flags, 16) & 1 == 0  # the sampled bit is off


async def test_tracing_off_is_the_untraced_path(upstream, gateway_factory, http):
    """Without [tracing] nothing is wrapped: the listener calls handle itself, the pipeline,
    forwarder and store are the plain ones, and a client's traceparent passes unchanged."""
    gw = await gateway_factory(upstream, extra='[policy]\ndefault = "allow"\n')
    g = gw.gateway
    assert g.tracing is None and g.entry == g.handle
    assert type(g.pipeline) is Pipeline and type(g.forwarder) is Forwarder
    assert type(g.services.store).__name__ == "MemoryStore"
    tp = f"00-{CLIENT_TRACE}-{CLIENT_PARENT}-01"
    async with http.get(url_of(gw, "/"), headers={"traceparent": tp}) as r:
        assert (await r.json())["headers"]["traceparent"] == tp


def test_tracing_without_the_packages_is_a_config_error(tmp_path, monkeypatch):
    """[tracing] on a machine without OpenTelemetry: a config error saying what to install."""
    monkeypatch.setattr(tracing, "REQUIRED", ("opentelemetry_absent_for_this_test.sdk",))
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=tracing_toml()))
    assert any("pip install 'popgate[tracing]'" in p for p in err.value.problems), err.value.problems


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('[tracing]\nendpoint = "collector:4318"\n', "tracing.endpoint"),
        ('[tracing]\nendpoint = "http://c:4318/v1/traces"\nsample_ratio = 2\n', "tracing.sample_ratio"),
        ("[tracing]\n", "tracing.endpoint"),
    ],
)
def test_tracing_config_problems(tmp_path, extra, problem):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=extra))
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems
