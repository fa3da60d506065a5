"""A World ID verify API for dApps, shaped like the Developer Portal's v2 verify endpoint.

``POST /.well-known/popgate/api/v2/verify/{app_id}`` (``app_id`` from ``[worldid_api]``; with
``path = "/api/v2/verify/"``, exactly the Portal's ``/api/v2/verify/{app_id}``) with
``{proof, merkle_root, nullifier_hash, verification_level, action, signal_hash?, max_age?}``
(what ``verifyCloudProof(proof, app_id, action, signal, endpoint)`` of
``@worldcoin/idkit-core/backend`` sends), answered like the Portal:

* 200 ``{"success": true, "uses", "max_uses", "action", "nullifier_hash", "created_at",
  "verification_level", "message"}``;
* otherwise ``{"code", "detail", "attribute"}``: 400 ``invalid_request`` (not JSON, unknown
  field), ``invalid_format`` (a field of the wrong shape; ``attribute`` names it),
  ``invalid_action``, ``verification_level_not_allowed``, ``invalid_merkle_root``,
  ``invalid_proof``, ``max_verifications_reached``; 404 ``not_found`` (unknown app);
  405; 413; 429 ``rate_limited`` and 503 ``overloaded`` / ``verifier_unavailable`` /
  ``store_unavailable`` with ``Retry-After``.

Checks, cheapest first: shape → action → level → field ranges → root (``[worldid.roots]``,
before any pairing) → per-network gate (only for proofs not in the verdict cache) → Groth16 in
the shared proof pool (:mod:`gateway.schemes.proofpool`) → the nullifier's use, counted
atomically in the store (``claim`` with ``limit = max_verifications``: across every gateway
sharing the store exactly that many succeed) → an entry in the per-action ledger, which the
admin listener lists (``GET /admin/worldid/verifications?app_id=&action=``, bearer token).

The public inputs are the Portal's: ``[root, nullifier_hash, signal_hash, external_nullifier
(app_id, action)]``; ``signal_hash`` is the dApp's (default: the hash of the empty signal).
:func:`check_v3` is the one proof check: World ID 4.0 results plug in beside it
(:data:`ProofCheck`).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from popgate.gateway.errors import GatewayError, StoreFailure
from popgate.gateway.http.bodies import read_bounded
from popgate.gateway.pipeline.context import Context
from popgate.gateway.registry import Registry, Services
from popgate.gateway.schemes.proofpool import ProofPool
from popgate.gateway.schemes.worldid_api_config import LEVELS, ActionSettings, AppSettings, WorldIdApiSettings
from popgate.gateway.schemes.worldid_roots import RootSource
from popgate.gateway.stores.base import StoreUnavailable, key
from popgate.verifiers import worldid
from popgate.verifiers.bn254.encoding import parse_uint
from popgate.verifiers.bn254.fields import R
from popgate.verifiers.errors import VerificationError

log = logging.getLogger("popgate.worldid_api")
PREFIX = "/.well-known/popgate/api/v2/verify/"
ADMIN_PATH = "/admin/worldid/verifications"
MAX_BODY = 16 * 1024
FIELDS = ("proof", "merkle_root", "nullifier_hash", "verification_level", "action")
OPTIONAL = ("signal_hash", "max_age")
EMPTY_SIGNAL = worldid.signal_hash("")
UNLIMITED = 2**31


class ApiError(Exception):
    """A Portal-style refusal: ``{"code", "detail", "attribute"}`` with ``status``."""

    def __init__(self, status: int, code: str, detail: str, attribute: str | None = None) -> None:
        super().__init__(code)
        self.status, self.code, self.detail, self.attribute = status, code, detail, attribute
        self.retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Checked:
    """What a valid proof establishes: the canonical nullifier, its level and scope."""

    nullifier: str
    verification_level: str
    scope: str


Gate = Callable[[], Awaitable[None]]
# (request body, app, action settings, the caller's cost gate) -> Checked; raises ApiError
ProofCheck = Callable[[dict[str, Any], AppSettings, ActionSettings, Gate], Awaitable[Checked]]


def portal_json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def error_body(exc: ApiError) -> web.Response:
    headers = {"Retry-After": str(max(1, int(exc.retry_after)))} if exc.retry_after else {}
    body = {"code": exc.code, "detail": exc.detail, "attribute": exc.attribute}
    return portal_json(exc.status, body, headers)


def _uint(body: dict[str, Any], name: str) -> int:
    try:
        n = parse_uint(body[name], name)
    except VerificationError:
        raise ApiError(400, "invalid_format", f"{name} must be a hex or decimal number.", name) from None
    if n >= R:
        raise ApiError(400, "invalid_format", f"{name} is not a field element.", name)
    return n


def parse_body(raw: bytes) -> dict[str, Any]:
    """The request body, shaped like the Portal's schema (unknown fields refused)."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        body = None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid_request", "Expected a JSON object.")
    for name in body:
        if name not in FIELDS and name not in OPTIONAL:
            raise ApiError(400, "invalid_request", f"Unknown field {name!r}.", str(name))
    for name in FIELDS:
        if not isinstance(body.get(name), str):
            raise ApiError(400, "invalid_format", f"{name} is required (a string).", name)
    if body["verification_level"] not in LEVELS:
        raise ApiError(
            400, "invalid_format", f"verification_level: one of {', '.join(LEVELS)}.", "verification_level"
        )
    max_age = body.get("max_age")
    if max_age is not None and (
        isinstance(max_age, bool) or not isinstance(max_age, int) or not 3600 <= max_age <= 604800
    ):
        raise ApiError(400, "invalid_format", "max_age must be an integer from 3600 to 604800.", "max_age")
    return body


class V3Check:
    """World ID 3.x (Semaphore) proofs: root from ``[worldid.roots]``, Groth16 in the pool."""

    def __init__(self, roots: RootSource, pool: ProofPool, clock: Callable[[], float]) -> None:
        self.roots, self.pool, self.clock = roots, pool, clock

    async def __call__(
        self, body: dict[str, Any], app: AppSettings, action: ActionSettings, gate: Gate
    ) -> Checked:
        root, nullifier = _uint(body, "merkle_root"), _uint(body, "nullifier_hash")
        sh = _uint(body, "signal_hash") if body.get("signal_hash") is not None else EMPTY_SIGNAL
        try:
            proof = worldid.parse_result({**body, "nullifier_hash": hex(nullifier)}).proof
        except VerificationError:
            raise ApiError(400, "invalid_format", "proof is not a packed Groth16 proof.", "proof") from None
        if not await self.roots.is_valid(root, self.clock()):
            raise ApiError(400, "invalid_merkle_root", "The merkle root is not valid (unknown or expired).")
        en = worldid.external_nullifier(app.app_id, action.action)
        packed, public = proof.packed(), [root, nullifier, sh, en]
        if self.pool.cached(packed, public) is False:
            await gate()
        try:
            await self.pool.verify(packed, public)
        except VerificationError:
            raise ApiError(400, "invalid_proof", "The provided proof is invalid.", "proof") from None
        return Checked(worldid.canonical_nullifier(nullifier), body["verification_level"], f"0x{en:064x}")


class VerifyApi:
    """The endpoint for one app (registered once per configured ``app_id``)."""

    def __init__(self, s: WorldIdApiSettings, services: Services, check: ProofCheck) -> None:
        self.s, self.services, self.check = s, services, check

    async def __call__(self, request: web.BaseRequest, ctx: Context, app: AppSettings) -> web.Response:
        metrics = self.services.metrics
        try:
            if request.method != "POST":
                raise ApiError(405, "method_not_allowed", "Use POST.")
            body = parse_body(await read_bounded(request, MAX_BODY, "worldid_api"))
            action = app.actions.get(body["action"])
            if action is None:
                raise ApiError(400, "invalid_action", "This action is not configured for the app.", "action")
            if action.verification_levels and body["verification_level"] not in action.verification_levels:
                raise ApiError(
                    400, "verification_level_not_allowed", "This level is not accepted.", "verification_level"
                )
            checked = await self.check(body, app, action, lambda: self._gate(ctx))
            answer = await self._use(app, action, checked, ctx.now)
        except ApiError as exc:
            metrics.evidence.labels("worldid_api", exc.code).inc()
            log.info("worldid api refused: %s (%s)", exc.code, exc.attribute)
            return error_body(exc)
        except StoreUnavailable:  # fail closed: no use is ever granted uncounted
            metrics.store_errors.labels("worldid_api").inc()
            err = ApiError(503, "store_unavailable", "Temporarily unavailable; retry.")
            err.retry_after = StoreFailure.retry_after
            return error_body(err)
        except GatewayError as exc:  # 413, 408, 429 gate, 503 pool or store
            metrics.evidence.labels("worldid_api", exc.reason).inc()
            err = ApiError(exc.status, exc.reason, exc.public or exc.title)
            err.retry_after = exc.retry_after
            return error_body(err)
        metrics.evidence.labels("worldid_api", "ok").inc()
        return portal_json(200, answer)

    async def _gate(self, ctx: Context) -> None:
        """At most ``gate_rate`` pool jobs per client network per ``gate_window``."""
        st, s = self.services, self.s
        used = await st.failure.guard(
            "rate_limit", st.store.incr(key("worldid-api-gate", ctx.network), 1, s.gate_window), 0
        )
        if used > s.gate_rate:
            err = ApiError(429, "rate_limited", "Too many proofs from this network.")
            err.retry_after = s.gate_window
            raise err

    async def _use(self, app: AppSettings, action: ActionSettings, c: Checked, now: float) -> dict[str, Any]:
        """Count one use of the nullifier (atomic across the fleet), then record it. The store is
        never skipped, whatever ``[store.failure_mode]`` says: unreachable, the answer is 503."""
        store, limit = self.services.store, action.max_verifications or UNLIMITED
        spot = f"{c.scope}:{c.nullifier}"
        if not await store.claim(key("worldid-api", spot), worldid.FOREVER, limit):
            raise ApiError(
                400, "max_verifications_reached", "This person has already verified for this action."
            )
        uses = await store.incr(key("worldid-api-uses", spot), 1, worldid.FOREVER)
        first = await store.get(key("worldid-api-first", spot)) if uses != 1 else None
        if uses == 1:
            await store.set(key("worldid-api-first", spot), repr(now).encode(), worldid.FOREVER)
        ref = json.dumps([c.nullifier, c.verification_level, uses], separators=(",", ":"))
        await store.credit_ledger(ledger_account(app.app_id, action.action), 1, "topup", ref, now)
        return {
            "success": True,
            "uses": uses,
            "max_uses": action.max_verifications,
            "action": action.action,
            "nullifier_hash": c.nullifier,
            "created_at": iso(float(first) if first else now),
            "verification_level": c.verification_level,
            "message": "Verified by popgate (local Groth16).",
        }


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def ledger_account(app_id: str, action: str) -> str:
    return f"worldid-api:{app_id}:{action}"


def admin_listing(s: WorldIdApiSettings, services: Services) -> Callable[[web.Request], Awaitable[Any]]:
    """``GET /admin/worldid/verifications?app_id=&action=&since=&limit=`` (bearer token)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        presented = value.strip().encode() if scheme.lower() == "bearer" else b""
        if s.admin_token is None or not hmac.compare_digest(presented, s.admin_token):
            return portal_json(401, {"code": "admin_token_required", "detail": "Bearer token required."})
        q = request.query
        app = s.apps.get(q.get("app_id", ""))
        if app is None or q.get("action", "") not in app.actions:
            return portal_json(404, {"code": "not_found", "detail": "Unknown app_id or action."})
        try:
            since, limit = int(q.get("since", "0")), min(1000, int(q.get("limit", "100")))
            rows = await services.store.ledger(ledger_account(app.app_id, q.get("action", "")), since, limit)
        except ValueError:
            return portal_json(400, {"code": "invalid_request", "detail": "since/limit: integers."})
        except StoreUnavailable:
            return portal_json(503, {"code": StoreFailure.reason, "detail": "Store unavailable."})
        out = []
        for row in rows:
            nullifier, level, uses = json.loads(row.ref)
            out.append(
                {"seq": row.seq, "nullifier_hash": nullifier, "verification_level": level, "uses": uses}
                | {"verified_at": iso(row.at)}
            )
        return portal_json(200, {"app_id": app.app_id, "action": q.get("action", ""), "verifications": out})

    return handler


def register_verify_api(registry: Registry, services: Services, roots: RootSource, pool: ProofPool) -> None:
    """Mount the API for each configured app, and the admin listing. Absent table: nothing."""
    s = services.config.features.worldid_api
    if s is None:
        return
    api = VerifyApi(s, services, V3Check(roots, pool, services.clock))
    for app in s.apps.values():

        async def endpoint(request: web.BaseRequest, ctx: Context, app: AppSettings = app) -> web.Response:
            return await api(request, ctx, app)

        registry.endpoints[s.path + app.app_id] = endpoint
    registry.admin_routes.append(("GET", ADMIN_PATH, admin_listing(s, services)))


__all__ = ["PREFIX", "ApiError", "Checked", "ProofCheck", "V3Check", "VerifyApi", "register_verify_api"]
