"""The dApp verify API for IDKit 4 results, shaped like the Developer Portal's v4 endpoint.

``POST {v4_path}{rp_id}`` (or ``…{app_id}``, which the Portal also resolves; ``v4_path``
defaults to the v2 ``path`` with ``/v2/`` made ``/v4/``, so ``path = "/api/v2/verify/"`` gives
the Portal's ``/api/v4/verify/{rp_id}``) with the IDKit 4.x result as-is
(``{protocol_version, nonce, action, environment, responses[], …}``), answered like the Portal:

* 200 ``{"success": true, "action", "nullifier", "created_at", "environment", "results":
  [{"identifier", "success", "nullifier", "protocol_version"}], "message", "uses", "max_uses"}``;
* otherwise ``{"code", "detail", "attribute"}`` with the v2 endpoint's codes, plus
  ``app_not_migrated`` (a 4.0 item for an app without ``rp_id``), ``unsupported_protocol``
  (4.0 without ``[worldid.chain]``), ``invalid_nonce``, ``duplicate_nonce`` (the result's
  nonce was used before), ``credential_expired``, ``unknown_issuer``, ``unknown_rp``.

Every item is checked by :func:`~popgate.gateway.schemes.worldid_idkit.verify_idkit` (v3 items
through the v3 key and ``[worldid.roots]``, v4 items locally through ``[worldid.chain]`` and
the 4.0 key, both in the proof pools) with ``nonces = "any"``: the rp_context was signed by
the dApp's backend, not by popgate, so any nonce is taken but each only once. Each item's own
``signal_hash`` enters the proof (absent: the empty signal's), and the dApp compares it with
its signal, as with the Portal. The nullifiers are then counted with the v2 endpoint's
counters (:func:`~popgate.gateway.schemes.worldid_api.count_use`): one per-action scope for v3
and v4 nullifiers, a v3 nullifier the same counter whichever endpoint saw it. A result with a
v3 and a v4 item counts one use of each (v4 first); if the second is refused, the first stays
counted (the store's claims are single-key).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from popgate.gateway.http.bodies import read_bounded
from popgate.gateway.pipeline.context import Context
from popgate.gateway.registry import Registry, Services
from popgate.gateway.schemes.proofpool import ProofPool
from popgate.gateway.schemes.worldid4_config import RpSettings
from popgate.gateway.schemes.worldid_api import (
    ADMIN_PATH,
    UNLIMITED,
    ApiError,
    V3Check,
    VerifyApi,
    admin_listing,
    count_use,
    find_action,
    iso,
)
from popgate.gateway.schemes.worldid_api_config import ActionSettings, AppSettings, v4_default
from popgate.gateway.schemes.worldid_idkit import Expectations, Outcome, Verifiers, split_items, verify_idkit
from popgate.gateway.schemes.worldid_roots import RootSource
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.groth16 import Proof
from popgate.verifiers.worldid_v4 import Chain, format_rp_id

MAX_BODY = 32 * 1024
NONCE_TTL = 7 * 86400  # a dApp's nonce is remembered a week (rp_context lifetimes are minutes)
TOP = {
    "protocol_version",
    "nonce",
    "action",
    "action_description",
    "environment",
    "responses",
    "user_presence_completed",
    "integrity_bundle",
}
# verification_levels -> the 4.0 issuer_schema_ids they admit (1 proof_of_human, 9303 passport,
# 9310 mnc, 11 selfie); "device" has no 4.0 credential.
LEVEL_SCHEMAS = {
    "orb": {1},
    "secure_document": {9303},
    "document": {9303, 9310},
    "face": {11},
    "device": set(),
}
CODES = {  # verify_idkit's reasons -> the Portal-style code (else the reason itself)
    "malformed": "invalid_format",
    "unknown_root": "invalid_merkle_root",
    "verification_level": "verification_level_not_allowed",
    "replayed": "duplicate_nonce",
}
Check = Callable[[Proof, list[int]], Awaitable[None]]
Items = tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]  # (v3 items, v4 items)


def parse_result(raw: bytes) -> dict[str, Any]:
    """The IDKit 4 result (top-level fields checked; the items by verify_idkit)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "Expected the IDKit 4 result, a JSON object.")
    for name in body:
        if name not in TOP:
            what = "session proofs are not verified here" if name == "session_id" else "unknown field"
            raise ApiError(400, "invalid_request", f"{name!r}: {what}.", str(name))
    if body.get("protocol_version") not in ("3.0", "4.0"):
        raise ApiError(400, "invalid_format", 'protocol_version: "3.0" or "4.0".', "protocol_version")
    if not isinstance(body.get("action"), str):
        raise ApiError(400, "invalid_format", "action is required (a string).", "action")
    items = body.get("responses")
    if not isinstance(items, list) or not 1 <= len(items) <= 2:
        raise ApiError(400, "invalid_format", "responses: a list of one or two items.", "responses")
    return body


def schemas(action: ActionSettings) -> frozenset[int]:
    out: set[int] = set()
    for level in action.verification_levels:
        out |= LEVEL_SCHEMAS[level]
    return frozenset(out) if action.verification_levels else frozenset()


class VerifyApiV4(VerifyApi):
    """The v4 endpoint for one app; shares the v2 endpoint's error handling, gate and counters."""

    def __init__(
        self,
        base: VerifyApi,
        roots: RootSource,
        pools: tuple[ProofPool, ProofPool | None],
        chain: Chain | None,
    ) -> None:
        super().__init__(base.s, base.services, base.check)
        self.roots, self.pools, self.chain = roots, pools, chain

    async def _answer(self, request: web.BaseRequest, ctx: Context, app: AppSettings) -> dict[str, Any]:
        body = parse_result(await read_bounded(request, MAX_BODY, "worldid_api"))
        action = find_action(app, body["action"])
        try:
            v3, v4 = split_items(body)
            if v4 and app.rp_id is None:
                raise ApiError(400, "app_not_migrated", "This app has no rp_id for World ID 4.0 proofs.")
            expect = Expectations(
                app_id=app.app_id,
                action=action.action,
                signal=None,
                now=ctx.now,
                levels=action.verification_levels,
                schemas=schemas(action),
                limit=UNLIMITED,
                item_signals=True,
            )
            out = await verify_idkit(body, expect, self._verifiers(ctx, app))
            uses = await self._count(app, action, out, (v3, v4), ctx.now)
        except VerificationError as exc:
            raise ApiError(400, CODES.get(exc.reason, exc.reason), exc.detail or exc.reason) from None
        return answer(body, action, out, (v3, v4), uses)

    def _verifiers(self, ctx: Context, app: AppSettings) -> Verifiers:
        def pooled(pool: ProofPool) -> Check:
            async def check(proof: Proof, public: list[int]) -> None:
                packed = proof.packed()
                if pool.cached(packed, public) is False:
                    await self._gate(ctx)
                await pool.verify(packed, public)

            return check

        v3_pool, v4_pool = self.pools
        rp = RpSettings(rp_id=app.rp_id or 0, keys={}, signing_kid="", ttl=NONCE_TTL - 120)
        return Verifiers(
            roots=self.roots,
            v3_check=pooled(v3_pool),
            v4_check=pooled(v4_pool) if v4_pool is not None else None,
            chain=self.chain,
            rp=rp,
            nonces="any",
        )

    async def _count(
        self, app: AppSettings, action: ActionSettings, out: Outcome, items: Items, now: float
    ) -> tuple[int, float]:
        """The nonce once (a replay uses nothing up), then each nullifier's use."""
        st, uses, first = self.services, 0, now
        for spend in out.spends:
            if spend.kind == "worldid-nonce":
                if not await st.store.claim(spend.key, spend.ttl, 1):
                    raise ApiError(400, "duplicate_nonce", "This result's nonce was used before.", "nonce")
                continue
            scope, nullifier = spend.ident.split(":", 1)
            level = str(item_of(items, nullifier).get("identifier", ""))
            n, t = await count_use(st, app, action, scope, nullifier, level, now)
            uses, first = max(uses, n), min(first, t)
        return uses, first


def item_of(items: Items, nullifier: str) -> Mapping[str, Any]:
    """The item a spent nullifier came from (``v4:…`` the 4.0 one)."""
    v3, v4 = items
    return v4[0] if nullifier.startswith("v4:") else v3[0]


def answer(
    body: dict[str, Any], action: ActionSettings, out: Outcome, items: Items, use: tuple[int, float]
) -> dict[str, Any]:
    nullifiers = [s.ident.split(":", 1)[1] for s in out.spends if s.kind != "worldid-nonce"]
    results = [
        {
            "identifier": item_of(items, n).get("identifier"),
            "success": True,
            "nullifier": n.removeprefix("v4:"),
            "protocol_version": "4.0" if n.startswith("v4:") else "3.0",
        }
        for n in nullifiers
    ]
    return {
        "success": True,
        "action": action.action,
        "nullifier": out.nullifier.removeprefix("v4:"),
        "created_at": iso(use[1]),
        "environment": body.get("environment", "production"),
        "results": results,
        "message": "Verified by popgate (local Groth16).",
        "uses": use[0],
        "max_uses": action.max_verifications,
    }


def register_verify_api(
    registry: Registry,
    services: Services,
    roots: RootSource,
    pools: tuple[ProofPool, ProofPool | None],
    chain: Chain | None,
) -> None:
    """Mount the v2 and v4 endpoints of each configured app, and the admin listing. Absent table: nothing."""
    s = services.config.features.worldid_api
    if s is None:
        return
    v2 = VerifyApi(s, services, V3Check(roots, pools[0], services.clock))
    v4 = VerifyApiV4(v2, roots, pools, chain)
    v4_path = s.v4_path or v4_default(s.path)
    for app in s.apps.values():
        for api, path in ((v2, s.path + app.app_id), (v4, v4_path + app.app_id)):
            registry.endpoints[path] = bind(api, app)
        if app.rp_id is not None:
            registry.endpoints[v4_path + format_rp_id(app.rp_id)] = bind(v4, app)
    registry.admin_routes.append(("GET", ADMIN_PATH, admin_listing(s, services)))


def bind(api: VerifyApi, app: AppSettings) -> Callable[[web.BaseRequest, Context], Awaitable[web.Response]]:
    async def endpoint(request: web.BaseRequest, ctx: Context) -> web.Response:
        return await api(request, ctx, app)

    return endpoint
