"""Privacy Pass redemption (RFC 9577 ``PrivateToken``, token type 0x0002).

The 402 carries ``WWW-Authenticate: PrivateToken challenge=…, token-key=…``
(one challenge per configured issuer) and a ``privatepass`` way out. A client
fetches a token from the issuer for that challenge and retries with
``Authorization: PrivateToken token=…``. popgate checks it
(:mod:`verifiers.privatepass`): the token's challenge digest must be one of
the challenges popgate would issue to this request now (a configured issuer
name, this origin's name, the redemption context of the current or the
previous ``challenge_window``), its key one of the issuer's, its RSA-PSS
authenticator valid; then its nonce is spent once in the store (every gateway
sharing the store). The request goes through as ``session_class`` (default
``human``) and the answer carries a popgate session (``PoP-Session`` header
and the session cookie) good for ``session_ttl``, so one token buys a
session, not one request.

The redemption context is HMAC(subject key, window number): every gateway of
a fleet computes the same challenges without sharing state, and a token
cannot be hoarded for longer than two windows. Issuer keys come from config
or from the issuer directory (RFC 9578 §4), fetched at start and re-fetched
after ``directory_ttl`` (or the directory's ``max-age``), the last good keys
kept while the issuer is away.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any

import aiohttp
from aiohttp import web

from popgate.gateway.pipeline.context import Attestation, Context
from popgate.gateway.pipeline.decisions import WayOut
from popgate.gateway.registry import Registry, Services
from popgate.gateway.schemes.privatepass_config import IssuerSettings, PrivatePassSettings
from popgate.gateway.stores.base import spend
from popgate.gateway.stores.failure import GuardedClaims
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.privatepass import (
    IssuerKey,
    TokenChallenge,
    b64u,
    b64u_decode,
    load_token_key,
    token_from_authorization,
    verify_token,
)
from popgate.verifiers.session import keyed_subject

log = logging.getLogger("popgate.privatepass")
DIRECTORY_PATH = "/.well-known/private-token-issuer-directory"
MAX_DIRECTORY = 64 * 1024


def parse_directory(body: bytes) -> tuple[list[IssuerKey], str]:
    """Type-2 keys of an RFC 9578 §4 issuer directory and its request URI; raises Malformed."""
    try:
        data = json.loads(body)
        entries = data["token-keys"]
        uri = str(data.get("issuer-request-uri", ""))
    except (ValueError, KeyError, TypeError):
        raise Malformed(detail="issuer directory is not RFC 9578 JSON") from None
    if not isinstance(entries, list):
        raise Malformed(detail="token-keys is not a list")
    keys = []
    for e in entries:
        if isinstance(e, dict) and e.get("token-type") == 2 and isinstance(e.get("token-key"), str):
            keys.append(load_token_key(b64u_decode(e["token-key"])))
    if not keys:
        raise Malformed(detail="no type-2 key in the directory")
    return keys, uri


def _max_age(cache_control: str) -> int | None:
    for part in cache_control.split(","):
        name, _, value = part.strip().partition("=")
        if name.lower() == "max-age" and value.strip().isdigit():
            return int(value)
    return None


class IssuerKeys:
    """One issuer's keys: from config, or its directory (fetched, cached, kept when the issuer is away)."""

    def __init__(self, issuer: IssuerSettings, settings: PrivatePassSettings, services: Services) -> None:
        self.issuer, self.s, self.services = issuer, settings, services
        self.keys: tuple[IssuerKey, ...] = issuer.keys
        self.request_uri = ""
        self.fresh_until = float("inf") if issuer.directory is None else 0.0
        self._lock = asyncio.Lock()

    async def current(self) -> tuple[IssuerKey, ...]:
        """The keys, re-fetched first when stale; raises VerificationError(``issuer_unavailable``)."""
        if time.time() >= self.fresh_until:
            async with self._lock:
                if time.time() >= self.fresh_until:
                    await self.refresh()
        if not self.keys:
            raise VerificationError("issuer_unavailable", f"no keys for issuer {self.issuer.name}")
        return self.keys

    async def refresh(self) -> None:
        """Fetch the directory once; on failure keep the last keys and retry after a minute."""
        url = f"{self.issuer.directory}{DIRECTORY_PATH}"
        try:
            http = await self.services.outbound()
            timeout = aiohttp.ClientTimeout(total=self.s.directory_timeout)
            async with http.get(url, timeout=timeout, allow_redirects=False) as resp:
                body = await resp.content.read(MAX_DIRECTORY + 1)
                if resp.status != 200 or len(body) > MAX_DIRECTORY:
                    raise Malformed(detail=f"status {resp.status}")
                keys, uri = parse_directory(body)
                ttl = min(self.s.directory_ttl, _max_age(resp.headers.get("Cache-Control", "")) or 1 << 30)
        except Exception as exc:  # any failure of the issuer (network, HTTP, JSON, key) keeps the old keys
            log.warning("issuer directory %s unavailable: %s", self.issuer.name, exc)
            self.fresh_until = time.time() + 60
            return
        self.keys, self.request_uri = tuple(keys), uri
        self.fresh_until = time.time() + max(1, ttl)


class PrivatePassScheme:
    """``Authorization: PrivateToken token=…`` → ``session_class`` (see the module doc)."""

    name = "privatepass"

    def __init__(self, settings: PrivatePassSettings, services: Services) -> None:
        self.s, self.services = settings, services
        self.issuers = [IssuerKeys(i, settings, services) for i in settings.issuers]
        self._context_key = hmac.new(services.subject_key, b"popgate-privatepass-context", "sha256").digest()
        self.claims = GuardedClaims(services.store, services.failure, "replay")

    def extract(self, request: web.BaseRequest) -> str | None:
        auth = request.headers.get("Authorization")
        if auth is not None and auth[:13].lower() == "privatetoken ":
            return auth
        return None

    async def keys(self) -> dict[bytes, IssuerKey]:
        """Every issuer's current keys by id; an issuer that is away is skipped (raises
        VerificationError ``issuer_unavailable`` only when no issuer has a key)."""
        keys: dict[bytes, IssuerKey] = {}
        for issuer in self.issuers:
            try:
                keys.update((k.key_id, k) for k in await issuer.current())
            except VerificationError:
                continue
        if not keys:
            raise VerificationError("issuer_unavailable", "no issuer key known")
        return keys

    def context_of(self, window: int) -> bytes:
        """The redemption context of one challenge window (32 bytes)."""
        return hmac.new(self._context_key, window.to_bytes(8, "big"), hashlib.sha256).digest()

    def origins(self, ctx: Context) -> tuple[str, ...]:
        return self.s.origin_info or (ctx.target.host,)

    def accepted(self, ctx: Context) -> set[bytes]:
        """Digests of every challenge this request may answer (current and previous window)."""
        window = int(ctx.now // self.s.challenge_window)
        return {
            TokenChallenge(i.issuer.name, self.context_of(w), origin).digest()
            for i in self.issuers
            for origin in self.origins(ctx)
            for w in (window, window - 1)
        }

    async def verify(self, ctx: Context, evidence: Any) -> Attestation:
        token = token_from_authorization(str(evidence))
        keys = await self.keys()
        item = verify_token(token, keys, self.accepted(ctx), spend_ttl=2 * self.s.challenge_window + 60)
        await spend(self.claims, item)
        ctx.consume("authorization")
        subject = keyed_subject(self.services.subject_key, "privatepass", token.nonce.hex())
        self._hand_out_session(ctx, subject)
        return Attestation(self.s.session_class, subject, "privatepass")

    def _hand_out_session(self, ctx: Context, subject: str) -> None:
        s, services = self.s, self.services
        token = services.sessions.issue(
            klass=s.session_class, subject=subject, now=ctx.now, ttl=s.session_ttl, evidence="privatepass"
        )
        services.metrics.sessions_issued.labels(s.session_class, "privatepass").inc()
        cookie = services.config.sessions.cookie_name
        secure = "; Secure" if services.config.sessions.cookie_secure or ctx.request.secure else ""
        ctx.response_headers.append(("PoP-Session", token))
        ctx.response_headers.append(
            (
                "Set-Cookie",
                f"{cookie}={token}; Path=/; Max-Age={s.session_ttl}; HttpOnly; SameSite=Lax{secure}",
            )
        )

    def way_out(self, ctx: Context) -> WayOut | None:
        """A challenge per issuer with a known key, for this origin and the current window."""
        window = int(ctx.now // self.s.challenge_window)
        challenges, headers = [], []
        for issuer in self.issuers:
            if not issuer.keys:
                continue
            key = issuer.keys[-1]
            raw = TokenChallenge(issuer.issuer.name, self.context_of(window), self.origins(ctx)[0]).encode()
            challenges.append(
                {
                    "issuer": issuer.issuer.name,
                    "challenge": b64u(raw),
                    "token_key": key.token_key,
                    **({"issuer_directory": issuer.issuer.directory} if issuer.issuer.directory else {}),
                }
            )
            headers.append(
                ("WWW-Authenticate", f'PrivateToken challenge="{b64u(raw)}", token-key="{key.token_key}"')
            )
        if not challenges:
            return None
        params = {"token_type": 2, "class": self.s.session_class, "challenges": challenges}
        return WayOut("privatepass", params, tuple(headers))


class _DirectoryFetch:
    """Background: fetch every issuer directory once at start (failures are retried on use)."""

    def __init__(self, scheme: PrivatePassScheme) -> None:
        self.scheme = scheme

    async def start(self) -> None:
        for issuer in self.scheme.issuers:
            if issuer.issuer.directory is not None:
                await issuer.refresh()

    async def stop(self) -> None:
        return None


def as_401(ctx: Context, response: web.StreamResponse) -> None:
    """``challenge_status = 401``: a 402 that offers a PrivateToken becomes a 401 (its
    problem+json says so too), which is what Apple's Private Access Token clients answer."""
    if response.status != 402 or "PrivateToken " not in response.headers.get("WWW-Authenticate", ""):
        return
    response.set_status(401)
    if isinstance(response, web.Response) and response.content_type == "application/problem+json":
        body = json.loads(response.body)  # type: ignore[arg-type]  # bytes: built by responses.py
        body["status"] = 401
        response.body = json.dumps(body, separators=(",", ":")).encode()


def privatepass_extension(registry: Registry, services: Services) -> None:
    """Wire the validated ``[privatepass]``: scheme, way out, directory fetch. Absent table: off."""
    settings: PrivatePassSettings | None = getattr(services.config.features, "privatepass", None)
    if settings is None:
        return
    scheme = PrivatePassScheme(settings, services)
    registry.schemes.append(scheme)
    registry.way_out_providers.append(lambda ctx, match: scheme.way_out(ctx))
    registry.background.append(_DirectoryFetch(scheme))
    if settings.challenge_status == 401:
        registry.observers.append(as_401)


__all__ = ["PrivatePassScheme", "parse_directory", "privatepass_extension"]
