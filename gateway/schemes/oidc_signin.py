"""Browser sign-in with an OpenID provider: authorization code + PKCE (S256) + ``nonce`` + ``state``.

For each ``[[zklogin.providers]]`` entry with a ``client_id`` (and ``name``):

* ``GET /.well-known/popgate/oidc/<name>/start?return=/path``: reads the provider's discovery
  document (cached ``discovery_ttl`` seconds; its ``issuer`` must be the configured one), keeps
  ``{nonce, PKCE verifier, return path, redirect_uri}`` in the store under a random ``state`` for
  ``signin_flow_ttl`` seconds, puts the state in an HttpOnly SameSite=Lax cookie scoped to
  ``/.well-known/popgate/oidc/`` and redirects to the provider's ``authorization_endpoint``.
* ``GET /.well-known/popgate/oidc/<name>/callback?code=&state=``: the state must equal the cookie's
  (constant-time) and is spent once in the store (a replayed callback fails, on any gateway sharing
  the store); the code is exchanged at the ``token_endpoint`` with the PKCE verifier and the client
  secret; the id_token is verified with the provider's JWKS (:mod:`verifiers.oidc`: signature,
  ``iss``, ``aud`` = client_id, ``exp``, age) and its ``nonce`` must equal the flow's; it is spent
  once. Then an ``account`` session cookie (HttpOnly, SameSite=Lax, Secure behind TLS,
  ``signin_session_ttl``, bound to the client's /24 or /64) and a 303 to the return path.

Every refusal is a readable HTML page for browsers (problem+json otherwise). This path is for
people in browsers; API clients and wallets use the zkLogin nonce binding and RFC 9421 request
signatures (:mod:`gateway.schemes.zklogin`).
"""

from __future__ import annotations

import hmac
import json
import logging
import os
from dataclasses import replace
from urllib.parse import urlsplit

from aiohttp import web

from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import WayOut
from popgate.gateway.pipeline.responses import problem
from popgate.gateway.registry import Registry, Services, WayOutProvider
from popgate.gateway.schemes.oidc_provider import Discovery, authorize_url, b64u, redeem_code
from popgate.gateway.schemes.oidc_signin_config import SigninClient
from popgate.gateway.schemes.session import cookie_value
from popgate.gateway.schemes.zklogin_config import ZkLoginSettings
from popgate.gateway.stores.base import key
from popgate.policies.model import Match
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.jwks import JwksCache
from popgate.verifiers.oidc import OidcClaims, OidcVerifier
from popgate.verifiers.zklogin import token_spend

log = logging.getLogger("popgate.oidc")
BASE = "/.well-known/popgate/oidc/"
FLOW_COOKIE = "popgate_oidc"
MAX_RETURN = 2048
STATUS = {"discovery_unavailable": 503, "jwks_unavailable": 503, "token_endpoint_unavailable": 503}
TITLES = {
    "wrong_state": "This sign-in link does not belong to this browser",
    "replayed": "This sign-in was already used",
    "flow_expired": "This sign-in took too long",
    "provider_error": "The provider did not sign you in",
    "token_exchange_failed": "The provider refused the sign-in code",
    "wrong_nonce": "The provider's answer does not match this sign-in",
    "wrong_audience": "The provider's answer was made for another application",
}


def safe_return(value: str | None) -> str:
    """A same-origin path to go back to (``/`` for anything else: no open redirect)."""
    if not value or len(value) > MAX_RETURN or not value.startswith("/") or value.startswith("//"):
        return "/"
    if "\\" in value or any(ord(ch) < 0x21 for ch in value) or urlsplit(value).netloc:
        return "/"
    return value


def check_nonce(claims: OidcClaims, expected: str) -> None:
    """The id_token's ``nonce`` must be the flow's (constant time); raises ``wrong_nonce``."""
    got = (claims.nonce or "").encode()
    if not got or not hmac.compare_digest(got, expected.encode()):
        raise VerificationError("wrong_nonce", "id_token nonce is not this flow's")


class SigninFlow:
    """The start and callback endpoints of one provider."""

    def __init__(
        self, s: ZkLoginSettings, client: SigninClient, services: Services, verifier: OidcVerifier
    ) -> None:
        self.s, self.client, self.services, self.verifier = s, client, services, verifier
        self.discovery = Discovery(client, services, s.discovery_ttl, s.allow_http_jwks)
        self.trusted = bool(services.config.trusted_proxies)
        self.callback_path = f"{BASE}{client.name}/callback"

    def _https(self, request: web.BaseRequest) -> bool:
        if self.s.signin_base_url is not None:
            return self.s.signin_base_url.startswith("https:")
        if self.trusted:
            proto = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
            if proto in ("http", "https"):
                return proto == "https"
        return request.scheme == "https"

    def _redirect_uri(self, request: web.BaseRequest) -> str:
        base = self.s.signin_base_url or f"{'https' if self._https(request) else 'http'}://{request.host}"
        return base.rstrip("/") + self.callback_path

    async def _rate(self, ctx: Context) -> None:
        st, s = self.services, self.s
        used = await st.failure.guard(
            "rate_limit", st.store.incr(key("oidc-rate", ctx.network), 1, s.rate_window), 0
        )
        if used > s.rate_limit:
            raise VerificationError("rate_limited", f"{used} sign-ins in {s.rate_window}s")

    async def start(self, request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return problem(request, 405, "method_not_allowed", "Method not allowed", headers={"Allow": "GET"})
        try:
            await self._rate(ctx)
            disc = await self.discovery.get()
        except VerificationError as exc:
            return self._refused(request, exc)
        state, nonce, verifier = b64u(os.urandom(24)), b64u(os.urandom(24)), b64u(os.urandom(32))
        redirect_uri = self._redirect_uri(request)
        back = safe_return(request.query.get("return"))
        flow = {"p": self.client.name, "n": nonce, "v": verifier, "r": back, "u": redirect_uri}
        st = self.services
        data = json.dumps(flow).encode()
        await st.failure.guard(
            "spend", st.store.set(key("oidc-flow", state), data, self.s.signin_flow_ttl), None
        )
        location = authorize_url(
            disc["authorization_endpoint"], self.client, redirect_uri, state, nonce, verifier
        )
        resp = web.Response(status=302, headers={"Location": location, "Cache-Control": "no-store"})
        ttl, secure = self.s.signin_flow_ttl, self._https(request)
        resp.set_cookie(
            FLOW_COOKIE, state, path=BASE, max_age=ttl, httponly=True, samesite="Lax", secure=secure
        )
        return resp

    async def callback(self, request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return problem(request, 405, "method_not_allowed", "Method not allowed", headers={"Allow": "GET"})
        metrics = self.services.metrics
        try:
            flow = await self._flow(request)
            claims = await self._exchange(request.query.get("code", ""), flow, ctx.now)
        except VerificationError as exc:
            metrics.evidence.labels("oidc", exc.reason).inc()
            log.info("oidc sign-in refused: %s (%s)", exc.reason, exc.detail)
            return self._refused(request, exc)
        metrics.evidence.labels("oidc", "ok").inc()
        return self._signed_in(request, ctx, claims, flow["r"])

    async def _flow(self, request: web.BaseRequest) -> dict[str, str]:
        """The flow this callback belongs to: state = the cookie's, spent once, not expired."""
        q = request.query
        if "error" in q:
            raise VerificationError("provider_error", str(q.get("error"))[:64])
        state, code = q.get("state", ""), q.get("code", "")
        held = cookie_value(request.headers.get("Cookie", ""), FLOW_COOKIE) or ""
        if not state or not code or len(state) > 64 or len(code) > 4096:
            raise VerificationError("wrong_state", "state or code missing")
        if not held or not hmac.compare_digest(state.encode(), held.encode()):
            raise VerificationError("wrong_state", "state is not this browser's")
        st = self.services
        ttl = self.s.signin_flow_ttl
        if not await st.failure.guard("spend", st.store.claim(key("oidc-state", state), ttl), False):
            raise VerificationError("replayed", "state already used")
        raw = await st.failure.guard("spend", st.store.get(key("oidc-flow", state)), None)
        if raw is None:
            raise VerificationError("flow_expired", "no flow for this state")
        await st.failure.guard("spend", st.store.delete(key("oidc-flow", state)), None)
        flow: dict[str, str] = json.loads(raw)
        if flow.get("p") != self.client.name:
            raise VerificationError("wrong_state", "flow of another provider")
        return flow

    async def _exchange(self, code: str, flow: dict[str, str], now: float) -> OidcClaims:
        """Code → id_token at the token endpoint, then the id_token's checks; spends it once."""
        disc = await self.discovery.get()
        token = await redeem_code(
            self.services, disc["token_endpoint"], self.client, code, flow["u"], flow["v"]
        )
        claims = await self.verifier.verify(token, now=now, require_nonce=True)
        check_nonce(claims, flow["n"])
        item = token_spend(token, claims.exp, now)
        st = self.services
        if not await st.failure.guard("spend", st.store.claim(item.key, item.ttl, item.limit), False):
            raise VerificationError("replayed", "id_token already used")
        return claims

    def _signed_in(
        self, request: web.BaseRequest, ctx: Context, claims: OidcClaims, return_to: str
    ) -> web.Response:
        st, ttl = self.services, self.s.signin_session_ttl
        # the zkLogin exchange's pseudonym (without a salt): one account, one subject, either way in
        mac = hmac.new(st.subject_key, claims.iss.encode() + b"\0" + claims.sub.encode(), "sha256")
        subject = "oidc:" + mac.hexdigest()[:32]
        token = st.sessions.issue(
            klass="account",
            subject=subject,
            now=ctx.now,
            ttl=ttl,
            evidence="oidc",
            binding=f"net:{ctx.network}",
        )
        st.metrics.sessions_issued.labels("account", "oidc").inc()
        resp = web.Response(
            status=303, headers={"Location": safe_return(return_to), "Cache-Control": "no-store"}
        )
        secure = self._https(request) or st.config.sessions.cookie_secure
        cookie = st.config.sessions.cookie_name
        resp.set_cookie(cookie, token, path="/", max_age=ttl, httponly=True, samesite="Lax", secure=secure)
        resp.del_cookie(FLOW_COOKIE, path=BASE)
        return resp

    def _refused(self, request: web.BaseRequest, exc: VerificationError) -> web.Response:
        status = STATUS.get(exc.reason, 429 if exc.reason == "rate_limited" else 400)
        title = TITLES.get(exc.reason, "Sign-in failed")
        detail = (
            f"Sign-in with {self.client.name} did not complete ({exc.reason}). "
            "Start again from the page you wanted."
        )
        return problem(request, status, exc.reason, title, detail)


def way_out(client: SigninClient) -> WayOut:
    """The 402's ``signin`` entry the challenge page links to (``href?return=<path>``)."""
    return WayOut(
        "signin", {"provider": client.name, "href": f"{BASE}{client.name}/start", "class": "account"}
    )


def _offer(offer: WayOut) -> WayOutProvider:
    def provide(ctx: Context, match: Match | None) -> WayOut:
        return offer

    return provide


def register_signin(registry: Registry, services: Services, s: ZkLoginSettings, jwks: JwksCache) -> None:
    """Endpoints and ``signin`` way outs for each provider with a ``client_id``."""
    providers = {p.issuer: p for p in s.providers}
    for client in s.signin:
        audience_is_client = replace(providers[client.issuer], audiences=frozenset({client.client_id}))
        flow = SigninFlow(s, client, services, OidcVerifier([audience_is_client], jwks))
        registry.endpoints[f"{BASE}{client.name}/start"] = flow.start
        registry.endpoints[f"{BASE}{client.name}/callback"] = flow.callback
        registry.way_out_providers.append(_offer(way_out(client)))


__all__ = [
    "BASE",
    "FLOW_COOKIE",
    "SigninFlow",
    "check_nonce",
    "register_signin",
    "safe_return",
    "way_out",
]
