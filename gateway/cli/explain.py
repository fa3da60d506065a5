"""``popgate explain --config F METHOD URL [-H 'Name: value' ...] [--ip A]``.

Builds the gateway the config describes (memory store, nothing listening),
makes the request it names, and runs the real pipeline on it up to the
decision: extract, target, precheck, verify, classify and the policy stage,
with a :class:`~popgate.policies.model.Trace` recording the weigh rules. No
store effect is applied (no spend, throttle step or payment) and nothing is
forwarded. Prints the rule that matched, the class, the weight, the decision
and the ways out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from popgate.gateway.app import Gateway, build_app
from popgate.gateway.errors import GatewayError
from popgate.gateway.extensions import default_extensions
from popgate.gateway.ops.config import Config
from popgate.gateway.pipeline.context import Context, Pipeline
from popgate.gateway.pipeline.decisions import Challenge, Charge, Decision, Deny, Throttle, WayOut
from popgate.gateway.pipeline.policy_stage import PolicyDenied, PolicyStage
from popgate.gateway.stores.memory import MemoryStore
from popgate.policies.model import Trace

DEFAULT_IP = "203.0.113.10"  # a documentation address: matches no private-network rule


class _Traced:
    """The policy stage's ``decide`` with a trace, in place of the gateway's Decide policy."""

    def __init__(self, stage: PolicyStage, trace: Trace) -> None:
        self.stage, self.trace = stage, trace

    def decide(self, ctx: Context) -> Decision | None:
        return self.stage.decide(ctx, self.trace)


def parse_headers(items: list[str]) -> CIMultiDict[str]:
    """``-H 'Name: value'`` arguments; raises ValueError naming a bad one."""
    out: CIMultiDict[str] = CIMultiDict()
    for item in items:
        name, sep, value = item.partition(":")
        if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
            raise ValueError(f"-H {item!r}: expected 'Name: value'")
        out.add(name.strip(), value.strip())
    return out


def make_request(method: str, url: str, headers: CIMultiDict[str]) -> web.Request:
    """The request to explain: origin-form target, Host from the URL unless given."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"URL {url!r}: expected http://host/path or https://host/path")
    if not method.isalpha():
        raise ValueError(f"METHOD {method!r}: expected a token such as GET")
    headers.setdefault("Host", parts.netloc)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return make_mocked_request(method.upper(), target, headers=headers)


async def explain(config: Config, request: web.Request, ip: str) -> dict[str, Any]:
    """Run the pipeline to the decision; return what ``popgate explain`` prints."""
    gateway = build_app(config, store=MemoryStore(), extensions=default_extensions())
    try:
        return await _decide(gateway, request, ipaddress.ip_address(ip))
    finally:
        await gateway.close()


async def _decide(gateway: Gateway, request: web.Request, ip: Any) -> dict[str, Any]:
    stage = gateway.registry.policy
    if not isinstance(stage, PolicyStage):
        raise TypeError("the policy stage is not registered")
    trace = Trace()
    gateway.policy.policy = _Traced(stage, trace)
    ctx = Context(request, time.time(), ip)
    try:
        ctx.target  # noqa: B018 - a bad target or host is refused first, as Gateway.handle does
        decision = await Pipeline(gateway.pipeline.stages[:-1]).run(ctx)  # all but Enforce
    except PolicyDenied as exc:
        return _result(ctx, trace, f"deny ({exc.status})", ())
    except GatewayError as exc:  # refused before the policy (bad target, too many headers...)
        return _result(ctx, trace, f"{exc.reason} ({exc.status})", ())
    if ctx.charge is not None:
        decision = ctx.charge
    return _result(ctx, trace, *_decision(decision, trace))


def _decision(decision: Decision, trace: Trace) -> tuple[str, tuple[WayOut, ...]]:
    if isinstance(decision, Challenge):
        return f"challenge (402, {decision.reason})", decision.ways_out
    if isinstance(decision, Charge):
        return f"charge {decision.price} atomic USD units (402 until paid)", decision.ways_out
    if isinstance(decision, Deny):
        return "deny (403)", ()
    if isinstance(decision, Throttle):
        return "throttle (429)", ()
    action = trace.match.action if trace.match is not None else None
    if action is not None and action.kind == "throttle" and action.rate is not None:
        r = action.rate
        return f"allow, throttled at {r.count}/{r.period:g}s burst {r.burst} per {r.per}", ()
    return "allow (forwarded to the origin)", ()


def _result(ctx: Context, trace: Trace, decision: str, ways: tuple[WayOut, ...]) -> dict[str, Any]:
    m = trace.match
    return {
        "rule": m.rule if m is not None else "",
        "route": m.route if m is not None else "",
        "class": ctx.klass,
        "weight": trace.weight,
        "weighed_by": [{"rule": name, "weight": w} for name, w in trace.weighed]
        + ([{"rule": "(heuristics)", "weight": trace.heuristic}] if trace.heuristic else []),
        "evidence": ctx.evidence_kind or None,
        "rejections": list(ctx.rejections),
        "decision": decision,
        "ways_out": [_way(w) for w in ways],
    }


def _way(w: WayOut) -> dict[str, Any]:
    keep = ("bits", "subs", "resource", "price", "header", "url")
    return {"kind": w.kind, **{k: v for k, v in w.params.items() if k in keep}}


def render(result: dict[str, Any], request: web.Request, ip: str) -> list[str]:
    """The human-readable lines."""
    weighed = ", ".join(f"{w['rule']} +{w['weight']}" for w in result["weighed_by"]) or "nothing"
    ways = [json.dumps(w, separators=(", ", ": ")) for w in result["ways_out"]]
    return [
        f"request:   {request.method} {request.host}{request.path_qs} from {ip}",
        f"class:     {result['class']}"
        + (f" (evidence: {result['evidence']})" if result["evidence"] else ""),
        f"weight:    {result['weight']} ({weighed})",
        f"rule:      {result['rule']} (route {result['route']})",
        f"decision:  {result['decision']}",
        *(["rejected:  " + ", ".join(result["rejections"])] if result["rejections"] else []),
        "ways out:  " + ("\n           ".join(ways) if ways else "none"),
    ]


def run(config: Config, method: str, url: str, headers: list[str], ip: str, as_json: bool) -> int:
    """Explain one request; print it. ValueError for a bad METHOD, URL, header or address."""
    ipaddress.ip_address(ip)
    request = make_request(method, url, parse_headers(headers))
    result = asyncio.run(explain(config, request, ip))
    print(json.dumps(result) if as_json else "\n".join(render(result, request, ip)))
    return 0
