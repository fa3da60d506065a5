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

4.0 results (IDKit 4.x ``protocol_version`` "4.0") are verified locally when
``[worldid.rp]`` and ``[worldid.chain]`` are configured
(:mod:`gateway.schemes.worldid_idkit`: the nonce popgate signed, chain facts,
the 4.0 key in its own proof pool), else by ``cloud_verify_url`` (the IDKit
result as-is, as the developer portal's ``/api/v4/verify`` takes it). Either
way popgate enforces nullifier uniqueness itself (``v4:<nullifier>`` in the
same scope as the v3 nullifiers), because the API does not. A result holding a
v3 and a v4 item spends both nullifiers for one session.

Answer: ``{"token", "token_type": "PoP", "class": "human", "subject",
"expires", "action"}`` and the same token as an HttpOnly SameSite=Lax cookie.
The subject is a keyed hash of scope and nullifier: never the nullifier.
Errors are problem+json with ``reason``: ``malformed`` (400), ``wrong_action``
(400), ``unsupported_protocol`` (400), ``invalid_proof``/``unknown_root``/
``verification_level``/``invalid_nonce``/``credential_expired``/``unknown_issuer``/
``unknown_rp`` (401), ``nullifier_reused``/``replayed`` (409), ``rate_limited`` (429), ``overloaded`` (503),
``verifier_unavailable`` (503: a pool worker died with the proof in flight;
the pool is replaced, retry), ``roots_unavailable``/``chain_unavailable`` (503).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from popgate.gateway.errors import GatewayError
from popgate.gateway.http.bodies import read_json_object
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import WayOut
from popgate.gateway.pipeline.responses import problem
from popgate.gateway.registry import Registry, Services
from popgate.gateway.schemes.proofpool import ProofPool, service_pool
from popgate.gateway.schemes.worldid_api_v4 import register_verify_api
from popgate.gateway.schemes.worldid_chain import FileChain, RpcChain
from popgate.gateway.schemes.worldid_config import WorldIdSettings
from popgate.gateway.schemes.worldid_idkit import Expectations, Verifiers, verify_idkit
from popgate.gateway.schemes.worldid_offer import ENDPOINT, claim_ttl, current_action, offer
from popgate.gateway.schemes.worldid_roots import (
    FileRoots,
    RedisSetRoots,
    RootSource,
    RpcRoots,
    StaticRoots,
    rpc_call,
)
from popgate.gateway.schemes.worldid_v4 import CloudVerifier
from popgate.gateway.stores.base import Spend, key
from popgate.gateway.stores.redis import RedisStore
from popgate.verifiers import worldid
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.groth16 import Proof
from popgate.verifiers.session import keyed_subject
from popgate.verifiers.worldid_v4 import Chain, key_json

log = logging.getLogger("popgate.worldid")
MAX_BODY = 16 * 1024
MAX_SIGNAL = 1024
FOREVER = worldid.FOREVER
STATUS = {
    "malformed": 400,
    "wrong_action": 400,
    "signal_not_allowed": 400,
    "unsupported_protocol": 400,
    "nullifier_reused": 409,
    "replayed": 409,
}
Gate = Callable[[web.BaseRequest, Context], Awaitable[None]]


class RateLimited(GatewayError):
    status, reason, title = 429, "rate_limited", "Too many proofs from this network"


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


@dataclass(frozen=True, slots=True)
class V4Local:
    """Local 4.0 verification: the 4.0 key's proof pool and the chain facts (both or neither)."""

    pool: ProofPool | None = None
    chain: Chain | None = None


class WorldIdEndpoint:
    """``GET``: what to prove; ``POST``: a proof → a ``human`` session."""

    def __init__(
        self,
        settings: WorldIdSettings,
        services: Services,
        roots: RootSource,
        pool: ProofPool,
        cloud: CloudVerifier | None,
        v4: V4Local | None = None,
    ) -> None:
        self.s, self.services, self.roots, self.pool, self.cloud = settings, services, roots, pool, cloud
        self.v4 = v4 or V4Local()
        self.gates: list[Gate] = [RateGate(services, settings.gate_rate, settings.gate_window)]
        self.cookie = services.config.sessions.cookie_name
        self.secure = services.config.sessions.cookie_secure

    async def __call__(self, request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        if request.method in ("GET", "HEAD"):
            return web.json_response(
                offer(self.s, ctx.now, self.v4.chain is not None or self.cloud is not None),
                headers={"Cache-Control": "no-store"},
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
    ) -> tuple[list[Spend], str, str, str]:
        """Check the proof(s) (:func:`worldid_idkit.verify_idkit`); return the
        Spends to claim, the scope, the subject's nullifier and the action."""
        s = self.s
        action = current_action(s, ctx.now)
        result = data.get("result", data)
        if not isinstance(result, dict):
            raise Malformed(detail="result: expected an object")
        sent = result.get("action")
        if sent is not None and sent != action:
            raise VerificationError("wrong_action", "result made for another action")
        expect = Expectations(
            app_id=s.app_id,
            action=action,
            signal=self._signal(data),
            now=ctx.now,
            levels=s.verification_levels,
            schemas=s.issuer_schema_ids,
            threshold=s.expiry_threshold,
            ttl=claim_ttl(s, ctx.now),
            limit=s.sessions_per_nullifier,
            legacy=s.legacy,
        )
        out = await verify_idkit(result, expect, self._verifiers(request, ctx))
        return out.spends, out.scope, out.nullifier, action

    def _verifiers(self, request: web.BaseRequest, ctx: Context) -> Verifiers:
        def pooled(pool: ProofPool) -> Callable[[Proof, list[int]], Awaitable[None]]:
            async def check(proof: Proof, public: list[int]) -> None:
                packed = proof.packed()
                if pool.cached(packed, public) is False:
                    await self._gate(request, ctx)
                await pool.verify(packed, public)

            return check

        return Verifiers(
            roots=self.roots,
            v3_check=pooled(self.pool),
            v4_check=pooled(self.v4.pool) if self.v4.pool is not None else None,
            chain=self.v4.chain,
            rp=self.s.rp,
            cloud=self.cloud,
            gate=lambda: self._gate(request, ctx),
        )

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

    async def _spend(self, items: list[Spend]) -> None:
        """Claim every Spend (nonce and nullifiers); any refused claim refuses the result."""
        st = self.services
        for item in items:
            fresh = await st.failure.guard("spend", st.store.claim(item.key, item.ttl, item.limit), True)
            if not fresh:
                raise item.refused()  # nullifier_reused / replayed

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


def root_source(s: WorldIdSettings, services: Services) -> RootSource:
    r = s.roots
    if r.source == "file":
        return FileRoots(r.file, r.poll_interval)
    if r.source == "redis":
        if not isinstance(services.store, RedisStore):
            raise ValueError('world_id roots: source = "redis" needs the Redis store')
        return RedisSetRoots(services.store.client, r.redis_key, r.poll_interval)
    if r.source == "rpc":
        return RpcRoots(rpc_call(services.outbound, r.rpc_url), r.contract, r.poll_interval, r.root_expiry)
    return StaticRoots(r.roots)


def chain_source(s: WorldIdSettings, services: Services) -> Chain | None:
    c = s.chain
    if c is None:
        return None
    if c.static is not None:
        return c.static
    if c.source == "file":
        return FileChain(c.file, c.poll_interval)
    return RpcChain(rpc_call(services.outbound, c.rpc_url), c.verifier, c.poll_interval)


def worldid_extension(registry: Registry, services: Services) -> None:
    """Wire the validated ``[worldid]``: endpoint, way out, pools. Absent table: off."""
    s = services.config.features.worldid
    if s is None:
        return
    sizes = {"workers": s.workers, "queue_limit": s.queue_limit, "cache_size": s.cache_size}
    pool = service_pool(services, s.vk_json, scheme="worldid", **sizes)
    cloud = CloudVerifier(s.cloud_verify_url, s.cloud_timeout, services) if s.cloud_verify_url else None
    chain = chain_source(s, services)
    v4 = V4Local()
    if chain is not None:
        v4 = V4Local(service_pool(services, s.v4_vk_json or key_json(), scheme="worldid4", **sizes), chain)
    roots = root_source(s, services)
    endpoint = WorldIdEndpoint(s, services, roots, pool, cloud, v4)
    registry.endpoints[ENDPOINT] = endpoint
    register_verify_api(registry, services, roots, (pool, v4.pool), v4.chain)  # shares keys, roots, pools
    offers_v4 = chain is not None or cloud is not None
    registry.way_out_providers.append(
        lambda ctx, match: WayOut("prove", offer(s, ctx.now, offers_v4, challenge=True))
    )
