"""World ID proofs → ``human`` sessions: ``POST /.well-known/popgate/worldid``.

Body (JSON, at most 16 KiB): ``{"result": <IDKit result>, "signal": "..."}``
or the IDKit result itself (with an optional ``"signal"`` beside it). The
result is an IDKit 2.x ``ISuccessResult``, an IDKit 4.x v3 response item, or
an IDKit 4.x result (``protocol_version`` ``"3.0"`` / ``"4.0"``).

The action the client must prove for (``GET`` this endpoint, or read the
402's ``prove`` way out) is ``[worldid] action`` when ``rotate = "none"``,
else ``f"{action}/d{floor(unix_time / 86400)}"`` (daily, UTC days) or
``f"{action}/w{floor(unix_time / 604800)}"`` (weekly, periods of 7 days
counted from the Unix epoch, i.e. starting Thursday 00:00 UTC). A new period
is a new action, so a person's nullifiers cannot be linked across periods.
The signal is ``""`` unless ``signal = "client"`` (then: the body's ``signal``).
popgate hashes app_id, action and signal itself; client-sent hashes are ignored.

Checks, cheapest first, so garbage is never free to send and never costly to
refuse: size and JSON shape → signal → then :func:`verifiers.worldid.check`
(the order ``popgate verify worldid`` uses too): proof parse (curve points) →
verification level → field ranges → root validity
(:mod:`gateway.schemes.worldid_roots`, before any pairing), with this pool
injected: verdict cache → the gates (default: a rate bucket per client network in the
store; more can be appended to ``endpoint.gates``, e.g. a solved puzzle) →
the Groth16 check in the bounded process pool (:mod:`gateway.schemes.proofpool`;
full → 503 + Retry-After) → spend the returned Spend: ``store.claim(key(
"worldid-nullifier", scope:nullifier), ttl, limit=sessions_per_nullifier)``, atomic across every
gateway sharing the store (scope = the external nullifier of app_id and action).

4.0 results go to ``cloud_verify_url`` (the IDKit result as-is, as the
developer portal's ``/api/v4/verify`` takes it); popgate still enforces
nullifier uniqueness (scope ``v4:`` + app_id/action), because the API does not.

Answer: ``{"token", "token_type": "PoP", "class": "human", "subject",
"expires", "action"}`` and the same token as an HttpOnly SameSite=Lax cookie.
The subject is a keyed hash of scope and nullifier: never the nullifier.
Errors are problem+json with ``reason``: ``malformed`` (400), ``wrong_action``
(400), ``invalid_proof``/``unknown_root``/``verification_level`` (401),
``nullifier_reused`` (409), ``rate_limited`` (429), ``overloaded`` (503),
``verifier_unavailable`` (503: a pool worker died with the proof in flight;
the pool is replaced, retry).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from popgate.gateway.errors import GatewayError
from popgate.gateway.http.bodies import read_json_object
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import WayOut
from popgate.gateway.pipeline.responses import problem
from popgate.gateway.registry import Registry, Services
from popgate.gateway.schemes.proofpool import ProofPool, service_pool
from popgate.gateway.schemes.worldid_api import register_verify_api
from popgate.gateway.schemes.worldid_config import WorldIdSettings
from popgate.gateway.schemes.worldid_roots import (
    FileRoots,
    RedisSetRoots,
    RootSource,
    RpcRoots,
    StaticRoots,
    rpc_caller,
)
from popgate.gateway.schemes.worldid_v4 import V4_PROTOCOL, CloudVerifier, v4_item
from popgate.gateway.stores.base import Spend, key
from popgate.gateway.stores.redis import RedisStore
from popgate.verifiers import worldid
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.groth16 import Proof
from popgate.verifiers.session import keyed_subject

log = logging.getLogger("popgate.worldid")
ENDPOINT = "/.well-known/popgate/worldid"
MAX_BODY = 16 * 1024
MAX_SIGNAL = 1024
FOREVER = worldid.FOREVER
STATUS = {
    "malformed": 400,
    "wrong_action": 400,
    "signal_not_allowed": 400,
    "unsupported_protocol": 400,
    "nullifier_reused": 409,
}
Gate = Callable[[web.BaseRequest, Context], Awaitable[None]]


class RateLimited(GatewayError):
    status, reason, title = 429, "rate_limited", "Too many proofs from this network"


def current_action(s: WorldIdSettings, now: float) -> str:
    """The action string a proof must be made for at ``now`` (see the module doc)."""
    if not s.period:
        return s.action
    return f"{s.action}/{s.rotate[0]}{int(now // s.period)}"


def claim_ttl(s: WorldIdSettings, now: float) -> float:
    """How long a spent nullifier is remembered: its period (+ one spare), or ten years."""
    if not s.period:
        return FOREVER
    return (int(now // s.period) + 2) * s.period - now


class RateGate:
    """At most ``rate`` pool jobs per client network per ``window`` (store counter)."""

    def __init__(self, services: Services, rate: int, window: float) -> None:
        self.services, self.rate, self.window = services, rate, window

    async def __call__(self, request: web.BaseRequest, ctx: Context) -> None:
        st = self.services
        used = await st.failure.guard(
            "rate_limit", st.store.incr(key("worldid-gate", ctx.network), 1, self.window), 0
        )
        if used > self.rate:
            err = RateLimited(f"{used} proofs in {self.window}s")
            err.retry_after = self.window
            raise err


class WorldIdEndpoint:
    """``GET``: what to prove; ``POST``: a proof → a ``human`` session."""

    def __init__(
        self,
        settings: WorldIdSettings,
        services: Services,
        roots: RootSource,
        pool: ProofPool,
        cloud: CloudVerifier | None,
    ) -> None:
        self.s, self.services, self.roots, self.pool, self.cloud = settings, services, roots, pool, cloud
        self.gates: list[Gate] = [RateGate(services, settings.gate_rate, settings.gate_window)]
        self.cookie = services.config.sessions.cookie_name
        self.secure = services.config.sessions.cookie_secure

    async def __call__(self, request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        if request.method in ("GET", "HEAD"):
            return web.json_response(
                offer(self.s, ctx.now, self.cloud is not None), headers={"Cache-Control": "no-store"}
            )
        if request.method != "POST":
            return problem(
                request, 405, "method_not_allowed", "Method not allowed", headers={"Allow": "GET, HEAD, POST"}
            )
        metrics = self.services.metrics
        try:
            data = await self._read(request)
            item, scope, nullifier, action = await self._verify(request, ctx, data)
            await self._spend(item)
        except VerificationError as exc:
            metrics.evidence.labels("worldid", exc.reason).inc()
            log.info("worldid exchange rejected: %s (%s)", exc.reason, exc.detail)
            return problem(request, STATUS.get(exc.reason, 401), exc.reason, "World ID proof rejected")
        except GatewayError as exc:
            metrics.evidence.labels("worldid", exc.reason).inc()
            raise
        metrics.evidence.labels("worldid", "ok").inc()
        return self._session(ctx, scope, nullifier, action)

    async def _verify(
        self, request: web.BaseRequest, ctx: Context, data: dict[str, Any]
    ) -> tuple[Spend, str, str, str]:
        """Check the proof (order: :func:`verifiers.worldid.check`); return the
        nullifier's Spend, its scope, the nullifier and the action."""
        s = self.s
        action = current_action(s, ctx.now)
        result = data.get("result", data)
        if not isinstance(result, dict):
            raise Malformed(detail="result: expected an object")
        sent = result.get("action")
        if sent is not None and sent != action:
            raise VerificationError("wrong_action", "result made for another action")
        if result.get("protocol_version") == V4_PROTOCOL and v4_item(result) is not None:
            if self.cloud is None:
                raise VerificationError("unsupported_protocol", "4.0 without cloud_verify_url")
            await self._gate(request, ctx)
            nullifier = await self.cloud.verify(result)
            scope = "v4:" + hashlib.sha256(f"{s.app_id}\0{action}".encode()).hexdigest()[:40]
            item = worldid.nullifier_spend(scope, nullifier, claim_ttl(s, ctx.now), s.sessions_per_nullifier)
            return item, scope, nullifier, action
        signal = self._signal(data)

        async def root_valid(root: int) -> bool:
            return await self.roots.is_valid(root, ctx.now)

        async def verify_proof(proof: Proof, public: list[int]) -> None:
            packed = proof.packed()
            if self.pool.cached(packed, public) is False:
                await self._gate(request, ctx)
            await self.pool.verify(packed, public)

        v = await worldid.check(
            result,
            app_id=s.app_id,
            action=action,
            signal=signal,
            root_valid=root_valid,
            verify_proof=verify_proof,
            levels=s.verification_levels,
            ttl=claim_ttl(s, ctx.now),
            limit=s.sessions_per_nullifier,
        )
        return v.spend, v.external_nullifier, v.nullifier, action

    def _signal(self, data: dict[str, Any]) -> str:
        signal = data.get("signal", "")
        if signal is None:
            signal = ""
        if not isinstance(signal, str) or len(signal) > MAX_SIGNAL:
            raise Malformed(detail="signal: expected a short string")
        if self.s.signal == "empty" and signal:
            raise VerificationError("signal_not_allowed", "this gateway proves an empty signal")
        return signal

    async def _gate(self, request: web.BaseRequest, ctx: Context) -> None:
        for gate in self.gates:
            await gate(request, ctx)

    async def _spend(self, item: Spend) -> None:
        st = self.services
        fresh = await st.failure.guard("spend", st.store.claim(item.key, item.ttl, item.limit), True)
        if not fresh:
            raise item.refused()  # nullifier_reused

    def _session(self, ctx: Context, scope: str, nullifier: str, action: str) -> web.Response:
        st, ttl = self.services, self.s.session_ttl
        subject = keyed_subject(st.subject_key, "human", f"{scope}:{nullifier}")
        token = st.sessions.issue(klass="human", subject=subject, now=ctx.now, ttl=ttl, evidence="worldid")
        st.metrics.sessions_issued.labels("human", "worldid").inc()
        body = {
            "token": token,
            "token_type": "PoP",
            "class": "human",
            "subject": subject,
            "expires": int(ctx.now) + ttl,
            "action": action,
        }
        resp = web.Response(
            body=json.dumps(body).encode(),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )
        resp.set_cookie(
            self.cookie, token, path="/", max_age=ttl, httponly=True, samesite="Lax", secure=self.secure
        )
        return resp

    @staticmethod
    async def _read(request: web.BaseRequest) -> dict[str, Any]:
        return await read_json_object(
            request,
            MAX_BODY,
            "worldid",
            'Expected JSON {"result": <IDKit result>, "signal": "..."}.',
            reason="malformed",
        )


def offer(s: WorldIdSettings, now: float, v4: bool) -> dict[str, Any]:
    """The ``prove`` way-out parameters (also ``GET`` on the endpoint)."""
    out: dict[str, Any] = {
        "method": "worldid",
        "app_id": s.app_id,
        "action": current_action(s, now),
        "endpoint": ENDPOINT,
        "class": "human",
        "signal": s.signal,
        "rotate": s.rotate,
        "protocol_versions": ["3.0", "4.0"] if v4 else ["3.0"],
        "body": {"result": "<IDKit result>", "signal": "<the signal proved>"},
    }
    if s.period:
        out["action_expires"] = int((now // s.period + 1) * s.period)
    if s.verification_levels:
        out["verification_levels"] = sorted(s.verification_levels)
    return out


def root_source(s: WorldIdSettings, services: Services) -> RootSource:
    r = s.roots
    if r.source == "file":
        return FileRoots(r.file, r.poll_interval)
    if r.source == "redis":
        if not isinstance(services.store, RedisStore):
            raise ValueError('world_id roots: source = "redis" needs the Redis store')
        return RedisSetRoots(services.store.client, r.redis_key, r.poll_interval)
    if r.source == "rpc":
        return RpcRoots(rpc_caller(services.outbound, r.rpc_url), r.contract, r.poll_interval, r.root_expiry)
    return StaticRoots(r.roots)


def worldid_extension(registry: Registry, services: Services) -> None:
    """Wire the validated ``[worldid]``: endpoint, way out, pool. Absent table: off."""
    s = services.config.features.worldid
    if s is None:
        return
    pool = service_pool(
        services,
        s.vk_json,
        workers=s.workers,
        queue_limit=s.queue_limit,
        scheme="worldid",
        cache_size=s.cache_size,
    )
    cloud = CloudVerifier(s.cloud_verify_url, s.cloud_timeout, services) if s.cloud_verify_url else None
    roots = root_source(s, services)
    endpoint = WorldIdEndpoint(s, services, roots, pool, cloud)
    registry.endpoints[ENDPOINT] = endpoint
    register_verify_api(registry, services, roots, pool)  # the dApp API shares key, roots and pool
    registry.way_out_providers.append(
        lambda ctx, match: WayOut("prove", offer(s, ctx.now, cloud is not None))
    )
