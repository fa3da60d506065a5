"""zkLogin-style ``account`` sessions, bound to an ephemeral key.

``POST /.well-known/popgate/zklogin`` with JSON ``{"id_token", "ext_eph_pk"
(base64 of flag || public key), "max_epoch", "randomness"}``: popgate verifies
the OIDC id_token (:mod:`verifiers.oidc`; providers from ``[zklogin]``),
recomputes the zkLogin nonce from the key, max_epoch and randomness and
requires it to equal the token's ``nonce`` (:mod:`verifiers.zklogin`), spends
the id_token once, and answers ``{"token", "keyid", ...}``: a session of class
``account`` whose ``binding`` is ``httpsig:<base64url flag||pk>``.

Every later request with that session must carry an RFC 9421 signature by the
ephemeral key (:func:`httpsig_binder`): ``keyid`` = the ``keyid`` returned
(the session's token id), covering ``@method``, ``@target-uri`` and, when the
request has a body, ``content-digest`` (which must match the body: the body is
read here, bounded by ``limits.max_body_bytes``, and the proxy forwards the
buffered bytes). A stolen session token without the key is worth nothing.

With ``[zklogin] proofs = true`` the same endpoint also takes a full zkLogin
proof instead of the id_token (:mod:`gateway.schemes.zklogin_proof`): the
JWT never reaches popgate; the session is the same, bound the same way.

The exchange costs an attacker: a per-network counter in the store is checked
before any JWKS fetch, signature check or pairing.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections import OrderedDict
from typing import Any

from aiohttp import web

from popgate.gateway.errors import BadRequest, GatewayError, PayloadTooLarge
from popgate.gateway.http.bodies import read_json_object
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import WayOut
from popgate.gateway.pipeline.responses import problem
from popgate.gateway.registry import Registry, Services
from popgate.gateway.schemes.oidc_signin import register_signin
from popgate.gateway.schemes.zklogin_config import ZkLoginSettings
from popgate.gateway.schemes.zklogin_proof import ProofExchange, proof_exchange, proofs_disabled, wants_proof
from popgate.gateway.stores.base import key, spend
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.httpsig import (
    Candidate,
    RequestView,
    VerifyingKey,
    bound_request_policy,
    verify_message,
)
from popgate.verifiers.jwks import JwksCache
from popgate.verifiers.oidc import OidcVerifier
from popgate.verifiers.session import InvalidSession, Session
from popgate.verifiers.zklogin import ZkLoginVerifier, decode_ext_eph_pk, parse_ext_eph_pk, token_spend

log = logging.getLogger("popgate.zklogin")
ENDPOINT = "/.well-known/popgate/zklogin"
BINDING = "httpsig"
MAX_EXCHANGE_BODY = 32 * 1024


def _b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _number(x: Any, name: str) -> int:
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    if isinstance(x, str) and x.isdigit() and len(x) <= 78:
        return int(x)
    raise BadRequest(f"{name} not a decimal", public=f"{name} must be a decimal integer or string.")


def _ext_pk(x: Any) -> bytes:
    try:
        return decode_ext_eph_pk(x)
    except VerificationError:
        raise BadRequest("ext_eph_pk", public="ext_eph_pk must be base64 of flag || public key.") from None


def request_scheme(request: web.BaseRequest, trusted: bool) -> str:
    """The scheme the client used: ``X-Forwarded-Proto`` only behind trusted proxies."""
    if trusted:
        proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
        if proto in ("http", "https"):
            return proto
    return request.scheme


async def read_body(request: web.BaseRequest, limit: int) -> bytes | None:
    """Read the whole request body (at most ``limit`` bytes) and leave it where
    aiohttp's ``read()`` and the proxy's forwarder find it. None without a body.

    Raises PayloadTooLarge or BadRequest.
    """
    cached = getattr(request, "_read_bytes", None)
    if cached is not None:
        return bytes(cached)
    if not request.body_exists:
        return None
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    parts, seen = [], 0
    try:
        async for chunk in request.content.iter_chunked(64 * 1024):
            seen += len(chunk)
            if seen > limit:
                raise PayloadTooLarge(f"body over {limit} bytes")
            parts.append(chunk)
    except (ConnectionResetError, OSError) as exc:
        raise BadRequest(f"request body: {exc}", reason="bad_body") from None
    body = b"".join(parts)
    request._read_bytes = body  # what BaseRequest.read() caches (the forwarder sends it)
    return body


class HttpsigBinder:
    """Session binder ``httpsig:<base64url flag||pk>``: the request must be
    signed (RFC 9421) by that key, with ``keyid`` = the session's token id."""

    def __init__(self, settings: ZkLoginSettings, services: Services) -> None:
        self.store, self.failure = services.store, services.failure
        self.metrics = services.metrics
        self.limit = services.config.limits.max_body_bytes
        self.trusted = bool(services.config.trusted_proxies)
        self.policy = bound_request_policy(
            window=settings.signature_window,
            clock_skew=settings.clock_skew,
            require_nonce=settings.require_request_nonce,
            replay_kind="zklogin-sig",
        )
        self._keys: OrderedDict[str, VerifyingKey] = OrderedDict()

    def _key(self, binding: str) -> VerifyingKey:
        found = self._keys.get(binding)
        if found is not None:
            return found
        try:
            raw = base64.urlsafe_b64decode(binding + "=" * (-len(binding) % 4))
            eph = parse_ext_eph_pk(raw)
        except (binascii.Error, ValueError, VerificationError):
            raise InvalidSession(detail="bad httpsig binding") from None
        vk = VerifyingKey.from_sui_key(eph.flag, eph.public_key)
        self._keys[binding] = vk
        if len(self._keys) > 4096:
            self._keys.popitem(last=False)
        return vk

    async def __call__(self, ctx: Context, session: Session) -> None:
        """Raise VerificationError unless the request is signed by the bound key."""
        started = time.perf_counter()
        vk = self._key(str(session.binding).split(":", 1)[1])
        request = ctx.request
        if "Signature-Input" not in request.headers:
            raise VerificationError("signature_required", "bound session without a signature")
        body = await read_body(request, self.limit)
        view = RequestView.from_aiohttp(request, body, request_scheme(request, self.trusted))

        async def resolve(cand: Candidate) -> VerifyingKey:
            return vk  # verify_message picked the signature whose keyid names the session

        store = _GuardedStore(self.store, self.failure)
        verified = await verify_message(
            view, resolve_key=resolve, policy=self.policy, now=ctx.now, keyid=session.token_id
        )
        if verified.spend is not None:
            await spend(store, verified.spend)
        self.metrics.verify_seconds.labels("httpsig").observe(time.perf_counter() - started)


class _GuardedStore:
    """``claim`` through the failure policy (replay set of request nonces)."""

    def __init__(self, store: Any, failure: Any) -> None:
        self.store, self.failure = store, failure

    async def claim(self, k: str, ttl: float, limit: int = 1) -> bool:
        return bool(await self.failure.guard("replay", self.store.claim(k, ttl, limit), True))


class ZkLoginEndpoint:
    """``POST /.well-known/popgate/zklogin``: id_token + ephemeral key → bound session."""

    def __init__(
        self,
        settings: ZkLoginSettings,
        services: Services,
        verifier: ZkLoginVerifier,
        epochs: Any,
        proofs: ProofExchange | None = None,
    ) -> None:
        self.s, self.services, self.verifier, self.epochs = settings, services, verifier, epochs
        self.proofs = proofs

    async def __call__(self, request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        if request.method != "POST":
            return problem(
                request, 405, "method_not_allowed", "Method not allowed", headers={"Allow": "POST"}
            )
        services, s = self.services, self.s
        used = await services.failure.guard(
            "rate_limit", services.store.incr(key("zklogin-rate", ctx.network), 1, s.rate_window), 0
        )
        if used > s.rate_limit:
            services.metrics.evidence.labels("zklogin", "rate_limited").inc()
            return problem(
                request,
                429,
                "rate_limited",
                "Too many sign-in attempts",
                headers={"Retry-After": str(int(s.rate_window))},
            )
        data = await self._read(request)
        started = time.perf_counter()
        try:
            current = await self.epochs.current(ctx.now) if s.epoch_mode == "sui" else None
            if wants_proof(data):
                if self.proofs is None:
                    raise proofs_disabled()
                proved = await self.proofs.verify(data, now=ctx.now, current_epoch=current)
                subject, address, eph = proved.subject, proved.address, proved.ephemeral_key
                expires_at = proved.expires_at
            else:
                att = await self._id_token(data, ctx, current)
                subject, address, eph, expires_at = (
                    att.subject,
                    att.address,
                    att.ephemeral_key,
                    att.expires_at,
                )
            ttl = int(min(s.session_ttl, max(0.0, (expires_at or float("inf")) - ctx.now)))
            if ttl <= 0:
                raise VerificationError("expired", "max_epoch leaves no session time")
        except VerificationError as exc:
            services.metrics.evidence.labels("zklogin", exc.reason).inc()
            log.info("zklogin exchange rejected: %s (%s)", exc.reason, exc.detail)
            status = 503 if exc.reason in ("jwks_unavailable", "epoch_unavailable") else 401
            return problem(request, status, exc.reason, "Sign-in rejected")
        except GatewayError as exc:
            services.metrics.evidence.labels("zklogin", exc.reason).inc()
            raise
        finally:
            services.metrics.verify_seconds.labels("zklogin").observe(time.perf_counter() - started)
        services.metrics.evidence.labels("zklogin", "ok").inc()
        session = services.sessions.issue(
            klass="account",
            subject=subject,
            now=ctx.now,
            ttl=ttl,
            evidence="zklogin",
            binding=f"{BINDING}:{_b64u(eph.extended)}",
        )
        services.metrics.sessions_issued.labels("account", "zklogin").inc()
        keyid = services.sessions.verify(session, ctx.now).token_id
        body = {
            "token": session,
            "token_type": "PoP",
            "class": "account",
            "subject": subject,
            "address": address,
            "keyid": keyid,
            "expires": int(ctx.now) + ttl,
            "signature": {
                "keyid": keyid,
                "covered": ["@method", "@target-uri", "content-digest (with a body)"],
                "window": s.signature_window,
            },
        }
        return web.Response(
            body=json.dumps(body).encode(),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    async def _id_token(self, data: dict[str, Any], ctx: Context, current: int | None) -> Any:
        """Verify an id_token exchange and spend the token once; raise VerificationError."""
        token = data.get("id_token", data.get("jwt"))
        if not isinstance(token, str):
            raise BadRequest("id_token", public="id_token must be a string.")
        eph = _ext_pk(data.get("ext_eph_pk"))
        max_epoch = _number(data.get("max_epoch"), "max_epoch")
        randomness = _number(data.get("randomness"), "randomness")
        att = await self.verifier.verify(
            token, eph, max_epoch, randomness, now=ctx.now, current_epoch=current
        )
        item = token_spend(token, att.claims.exp, ctx.now)
        fresh = await self.services.failure.guard(
            "replay", self.services.store.claim(item.key, item.ttl, item.limit), True
        )
        if not fresh:
            raise item.refused()
        return att

    @staticmethod
    async def _read(request: web.BaseRequest) -> dict[str, Any]:
        return await read_json_object(
            request,
            MAX_EXCHANGE_BODY,
            "zklogin",
            'Expected JSON {"id_token", "ext_eph_pk", "max_epoch", "randomness"} or {"zklogin_signature"}.',
        )


def way_out(settings: ZkLoginSettings) -> WayOut:
    """How to get an ``account`` session (listed in every 402)."""
    return WayOut(
        "zklogin",
        {
            "endpoint": ENDPOINT,
            "class": "account",
            "providers": [{"issuer": p.issuer, "audiences": sorted(p.audiences)} for p in settings.providers],
            "epoch_mode": settings.epoch_mode,
            "nonce": "base64url(last 20 bytes of Poseidon(eph_hi, eph_lo, max_epoch, randomness))",
            "request_signature": {
                "rfc": 9421,
                "keyid": "the keyid returned with the session",
                "covered": ["@method", "@target-uri", "content-digest"],
                "window": settings.signature_window,
            },
            **(
                {
                    "proof": {
                        "body": {"zklogin_signature": "base64(0x05 || BCS(ZkLoginSignature))"},
                        "or": {
                            "inputs": "the prover's JSON with addressSeed",
                            "ext_eph_pk": "base64(flag || pk)",
                            "max_epoch": "...",
                        },
                        "circuit": "Sui zkLogin V1",
                    }
                }
                if settings.proofs
                else {}
            ),
        },
    )


def zklogin_extension(registry: Registry, services: Services) -> None:
    """Wire the validated ``[zklogin]``: endpoint, ``httpsig`` binder, way out. Absent table: off."""
    settings = services.config.features.zklogin
    if settings is None:
        return
    jwks = JwksCache(
        _LazySession(services),  # type: ignore[arg-type]  # duck-typed .get()
        refetch_interval=settings.jwks_refetch_interval,
        max_stale=settings.jwks_max_stale,
        timeout=settings.jwks_timeout,
    )
    salt = settings.salt
    oidc = OidcVerifier(settings.providers, jwks)
    verifier = ZkLoginVerifier(
        oidc,
        epoch_mode="sui" if settings.epoch_mode == "sui" else "unix",
        salt=salt,
        subject_key=services.subject_key,
        max_session=settings.max_session,
        max_epoch_delta=settings.max_epoch_delta,
        padded_address=settings.padded_address,
    )
    epochs = settings.epoch_source(services)
    proofs = proof_exchange(settings, services, oidc, jwks, verifier)
    registry.endpoints[ENDPOINT] = ZkLoginEndpoint(settings, services, verifier, epochs, proofs)
    registry.session.binders[BINDING] = HttpsigBinder(settings, services)
    offer = way_out(settings)
    registry.way_out_providers.append(lambda ctx, match: offer)
    register_signin(registry, services, settings, jwks)  # browsers: code + PKCE → cookie session


class _LazySession:
    """An aiohttp-session stand-in that opens ``services.outbound()`` on first use."""

    def __init__(self, services: Services) -> None:
        self.services = services

    def get(self, url: str, **kw: Any) -> Any:
        return _LazyGet(self.services, url, kw)


class _LazyGet:
    def __init__(self, services: Services, url: str, kw: dict[str, Any]) -> None:
        self.services, self.url, self.kw = services, url, kw
        self.ctx: Any = None

    async def __aenter__(self) -> Any:
        session = await self.services.outbound()
        self.ctx = session.get(self.url, **self.kw)
        return await self.ctx.__aenter__()

    async def __aexit__(self, *exc: Any) -> Any:
        if self.ctx is None:
            raise RuntimeError("__aexit__ without __aenter__")
        return await self.ctx.__aexit__(*exc)


__all__ = ["ENDPOINT", "HttpsigBinder", "ZkLoginEndpoint", "read_body", "zklogin_extension"]
