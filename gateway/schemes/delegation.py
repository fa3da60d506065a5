"""Delegations: a person's session lends an agent key the right to act for them.

``POST /.well-known/popgate/delegate`` with the human's session
(``Authorization: PoP …`` or the cookie) and JSON ``{"jwk": <the agent's
Ed25519 or P-256 public JWK>, "scope": "/api/", "ttl": 3600 | "expires":
<unix>, "quota": 500}`` answers a delegation token: a popgate session of
class ``backed-agent``, subject the human's pseudonym, bound (``deleg:``) to
the agent key (:mod:`verifiers.delegation` keeps it within the human's
session). The agent sends ``Authorization: PoP <delegation>`` on requests
signed with RFC 9421 by its key, ``keyid`` = the delegation id (the same rules
as bound account sessions, :class:`gateway.schemes.zklogin.HttpsigBinder`).
The origin then sees ``PoP-Class: backed-agent``, ``PoP-Evidence:
delegation`` and ``PoP-Backed-By: <the human's subject>``.

Quotas: ``quota`` (this delegation, counted per request in the store) and
``[delegation] daily_quota`` (per human and UTC day across all their agents:
one atomic at-most-N claim in the store shared by the fleet). Revocation:
``DELETE /.well-known/popgate/delegate?id=<id>`` by the same human marks it
revoked in the store; each gateway re-reads that mark at most every
``revocation_check`` seconds per delegation, so a revocation takes effect
fleet-wide within that bound.
"""

from __future__ import annotations

import hmac
import json
import logging
import time
from collections import OrderedDict

from aiohttp import web

from popgate.gateway.http.bodies import read_json_object
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import Decision, Deny
from popgate.gateway.pipeline.responses import problem
from popgate.gateway.registry import Registry, Services
from popgate.gateway.schemes.delegation_config import DelegationSettings
from popgate.gateway.schemes.zklogin import _GuardedStore, read_body, request_scheme
from popgate.gateway.stores.base import key, spend
from popgate.verifiers.delegation import BINDING, DelegationRequest, binding_key, parse_request
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.httpsig import (
    Candidate,
    RequestView,
    VerifyingKey,
    bound_request_policy,
    verify_message,
)
from popgate.verifiers.session import InvalidSession, Session

log = logging.getLogger("popgate.delegation")
ENDPOINT = "/.well-known/popgate/delegate"
KLASS, EVIDENCE = "backed-agent", "delegation"
MAX_BODY = 8 * 1024
COVERED = ["@method", "@target-uri", "content-digest (with a body)"]


class DelegationBinder:
    """Session binder ``deleg:``: not revoked, signed by the agent key, within the human's daily quota."""

    def __init__(self, settings: DelegationSettings, services: Services) -> None:
        self.s, self.services = settings, services
        self.store, self.failure = services.store, services.failure
        self.limit = services.config.limits.max_body_bytes
        self.trusted = bool(services.config.trusted_proxies)
        self.policy = bound_request_policy(
            window=settings.signature_window,
            clock_skew=settings.clock_skew,
            require_nonce=settings.require_nonce,
            replay_kind="deleg-sig",
        )
        self._checked: dict[str, float] = {}  # delegation id -> not revoked as of (monotonic)
        self._revoked: set[str] = set()  # revocation is final: never asked again
        self._keys: OrderedDict[str, VerifyingKey] = OrderedDict()  # binding -> parsed agent key

    def key_of(self, binding: str) -> VerifyingKey:
        """The agent key of a ``deleg:`` binding, parsed once (bounded LRU)."""
        found = self._keys.get(binding)
        if found is None:
            found = self._keys[binding] = binding_key(binding)
            if len(self._keys) > 4096:
                self._keys.popitem(last=False)
        return found

    async def revoked(self, token_id: str) -> bool:
        """Read the revocation mark at most every ``revocation_check`` seconds per delegation."""
        if token_id in self._revoked:
            return True
        now = time.monotonic()
        seen = self._checked.get(token_id)
        if seen is not None and now - seen < self.s.revocation_check:
            return False
        mark = await self.failure.guard("replay", self.store.get(key("deleg-revoked", token_id)), None)
        if mark is not None:
            self._checked.pop(token_id, None)
            if len(self._revoked) > 65536:
                self._revoked.clear()
            self._revoked.add(token_id)
            return True
        if len(self._checked) > 65536:
            self._checked.clear()
        self._checked[token_id] = now
        return False

    async def __call__(self, ctx: Context, session: Session) -> None:
        """Raise VerificationError unless the request may go through on this delegation."""
        if session.klass != KLASS:
            raise InvalidSession(detail="a deleg binding on another class")
        if await self.revoked(session.token_id):
            raise VerificationError("delegation_revoked", "revoked delegation")
        if "Signature-Input" not in ctx.request.headers:
            raise VerificationError("signature_required", "delegation without a signature")
        vk = self.key_of(str(session.binding))
        body = await read_body(ctx.request, self.limit)
        view = RequestView.from_aiohttp(ctx.request, body, request_scheme(ctx.request, self.trusted))

        async def resolve(cand: Candidate) -> VerifyingKey:
            return vk

        verified = await verify_message(
            view, resolve_key=resolve, policy=self.policy, now=ctx.now, keyid=session.token_id
        )
        if verified.spend is not None:
            await spend(_GuardedStore(self.store, self.failure), verified.spend)
        await self._daily(ctx, session.subject)

    async def _daily(self, ctx: Context, subject: str) -> None:
        if not self.s.daily_quota:
            return
        day = int(ctx.now // 86400)
        ok = await self.failure.guard(
            "budget",
            self.store.claim(key("deleg-day", f"{subject}:{day}"), 86400 + 3600, self.s.daily_quota),
            True,
        )
        if not ok:
            raise VerificationError("delegation_quota", "the human's daily quota is spent")


class DelegateEndpoint:
    """``POST`` makes a delegation, ``DELETE ?id=`` revokes one (see the module doc)."""

    def __init__(self, settings: DelegationSettings, services: Services, registry: Registry) -> None:
        self.s, self.services, self.sessions = settings, services, registry.session

    async def __call__(self, request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        if request.method not in ("POST", "DELETE"):
            return problem(
                request, 405, "method_not_allowed", "Method not allowed", headers={"Allow": "POST, DELETE"}
            )
        try:
            human = await self._human(ctx)
        except VerificationError as exc:
            return problem(request, 401, exc.reason, "A person's session is required to delegate")
        if request.method == "DELETE":
            return await self._revoke(request, human)
        return await self._create(request, ctx, human)

    async def _human(self, ctx: Context) -> Session:
        token = self.sessions.extract(ctx.request)
        if token is None:
            raise VerificationError("no_session", "no session")
        session = self.services.sessions.verify(token, ctx.now)
        if session.klass not in self.s.from_classes or session.evidence == EVIDENCE:
            raise VerificationError("not_a_person", f"class {session.klass} may not delegate")
        if session.binding is not None:
            binder = self.sessions.binders.get(session.binding.split(":", 1)[0])
            if binder is None:
                raise InvalidSession(detail="no binder")
            await binder(ctx, session)
        return session

    async def _create(self, request: web.BaseRequest, ctx: Context, human: Session) -> web.StreamResponse:
        services, s = self.services, self.s
        used = await services.failure.guard(
            "rate_limit", services.store.incr(key("deleg-rate", human.subject), 1, s.rate_window), 0
        )
        if used > s.rate_limit:
            return problem(
                request, 429, "rate_limited", "Too many delegations", headers={"Retry-After": "60"}
            )
        data = await read_json_object(
            request, MAX_BODY, "delegation", 'Expected JSON {"jwk", "scope", "ttl", "quota"}.'
        )
        try:
            want = parse_request(data, human, ctx.now, s.max_ttl)
        except VerificationError as exc:
            services.metrics.evidence.labels("delegation", exc.reason).inc()
            status = 400 if exc.reason == "malformed" else 403
            return problem(request, status, exc.reason, "Delegation refused", exc.detail)
        token, delegation_id = await self._issue(want, human, ctx.now)
        body = {
            "token": token,
            "token_type": "PoP",
            "id": delegation_id,
            "class": KLASS,
            "backed_by": human.subject,
            "scope": want.scope,
            "expires": want.expires,
            "quota": want.quota,
            "routes": list(want.routes) if want.routes is not None else None,
            "daily_quota": s.daily_quota or None,
            "signature": {"keyid": delegation_id, "covered": COVERED, "window": s.signature_window},
            "revocation_bound": s.revocation_check,
        }
        headers = {"Cache-Control": "no-store"}
        return web.Response(
            status=201, body=json.dumps(body).encode(), content_type="application/json", headers=headers
        )

    async def _issue(self, want: DelegationRequest, human: Session, now: float) -> tuple[str, str]:
        """Sign the delegation and record whose it is (for revocation); return (token, id)."""
        services = self.services
        ttl = want.expires - int(now)
        token = services.sessions.issue(
            klass=KLASS,
            subject=human.subject,
            now=now,
            ttl=ttl,
            scope=want.scope,
            evidence=EVIDENCE,
            binding=want.binding,
            budget=want.quota,
            routes=want.routes,
        )
        delegation_id = services.sessions.verify(token, now).token_id
        owner = key("deleg", delegation_id)
        await services.failure.guard(
            "spend", services.store.set(owner, human.subject.encode(), ttl + 60), None
        )
        services.metrics.sessions_issued.labels(KLASS, EVIDENCE).inc()
        return token, delegation_id

    async def _revoke(self, request: web.BaseRequest, human: Session) -> web.StreamResponse:
        delegation_id = request.query.get("id", "")
        if not delegation_id or len(delegation_id) > 64:
            return problem(request, 400, "malformed", "Which delegation?", "Give ?id=<delegation id>.")
        store, failure = self.services.store, self.services.failure
        owner = await failure.guard("spend", store.get(key("deleg", delegation_id)), None)
        if owner is None or not hmac.compare_digest(owner, human.subject.encode()):
            return problem(request, 404, "no_such_delegation", "No such delegation of yours")
        await failure.guard(
            "spend", store.set(key("deleg-revoked", delegation_id), b"1", self.s.max_ttl + 3600), None
        )
        log.info("delegation revoked")
        return web.Response(status=204, headers={"Cache-Control": "no-store"})


async def enforce_routes(ctx: Context) -> Decision | None:
    """A delegation limited to ``routes`` (names of policy rules or routes; ``default`` when no
    rule matched) is refused (403 ``delegation_out_of_scope``) elsewhere. First among the
    enforcers: nothing is charged before it."""
    if ctx.klass != KLASS:
        return None
    for att in ctx.attestations:
        routes = att.session.routes if att.evidence == EVIDENCE and att.session is not None else None
        if routes is not None and ctx.rule not in routes and ctx.route not in routes:
            return Deny(
                reason="delegation_out_of_scope", detail="The person's delegation does not cover this."
            )
    return None


def delegation_extension(registry: Registry, services: Services) -> None:
    """Wire the validated ``[delegation]``: endpoint and ``deleg`` binder. Absent table: off."""
    settings: DelegationSettings | None = getattr(services.config.features, "delegation", None)
    if settings is None:
        return
    registry.endpoints[ENDPOINT] = DelegateEndpoint(settings, services, registry)
    registry.session.binders[BINDING] = DelegationBinder(settings, services)
    registry.enforcers.insert(0, enforce_routes)


__all__ = ["ENDPOINT", "DelegateEndpoint", "DelegationBinder", "delegation_extension"]
