"""Talking to an OpenID provider for browser sign-in: its discovery document (cached), the
authorization URL (code + PKCE S256 + nonce + state) and the code redemption at its token
endpoint (client secret by HTTP Basic or in the form, RFC 6749 §2.3.1)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from typing import Any
from urllib.parse import quote_plus, urlencode, urlsplit

import aiohttp

from popgate.gateway.registry import Services
from popgate.gateway.schemes.oidc_signin_config import SigninClient
from popgate.verifiers.errors import VerificationError

log = logging.getLogger("popgate.oidc")
BASIC_AUTH = "client_secret_basic"  # a token endpoint auth method name


def b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def pkce_challenge(verifier: str) -> str:
    """RFC 7636 S256: base64url(SHA-256(ascii(verifier)))."""
    return b64u(hashlib.sha256(verifier.encode("ascii")).digest())


class Discovery:
    """The provider's discovery document, cached ``ttl`` seconds; one fetch at a time. Its
    ``issuer`` must be the configured one; its endpoints must be https (http when allowed)."""

    def __init__(self, client: SigninClient, services: Services, ttl: float, allow_http: bool) -> None:
        self.client, self.services, self.ttl, self.allow_http = client, services, ttl, allow_http
        self._doc: dict[str, str] | None = None
        self._at = float("-inf")
        self._lock = asyncio.Lock()

    async def get(self) -> dict[str, str]:
        """``{"authorization_endpoint", "token_endpoint"}``; raises ``discovery_unavailable``."""
        async with self._lock:
            if self._doc is None or time.monotonic() - self._at >= self.ttl:
                self._doc, self._at = await self._fetch(), time.monotonic()
            return self._doc

    def _url_ok(self, url: Any) -> bool:
        scheme = urlsplit(url).scheme if isinstance(url, str) else ""
        return scheme == "https" or (self.allow_http and scheme == "http")

    async def _fetch(self) -> dict[str, str]:
        try:
            session = await self.services.outbound()
            async with session.get(self.client.discovery_url, allow_redirects=False) as resp:
                if resp.status != 200:
                    raise ValueError(f"status {resp.status}")
                doc = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("oidc discovery for %s failed: %s", self.client.name, type(exc).__name__)
            raise VerificationError("discovery_unavailable", type(exc).__name__) from None
        if not isinstance(doc, dict) or doc.get("issuer") != self.client.issuer:
            raise VerificationError("discovery_unavailable", "issuer mismatch")
        ends = {k: doc.get(k) for k in ("authorization_endpoint", "token_endpoint")}
        if not all(self._url_ok(v) for v in ends.values()):
            raise VerificationError("discovery_unavailable", "endpoints missing or not https")
        return {k: str(v) for k, v in ends.items()}


def authorize_url(
    endpoint: str, client: SigninClient, redirect_uri: str, state: str, nonce: str, verifier: str
) -> str:
    """The authorization request: response_type=code, PKCE S256, nonce and state."""
    params = {
        "response_type": "code",
        "client_id": client.client_id,
        "redirect_uri": redirect_uri,
        "scope": client.scopes,
        "state": state,
        "nonce": nonce,
        "code_challenge": pkce_challenge(verifier),
        "code_challenge_method": "S256",
    }
    return endpoint + ("&" if "?" in endpoint else "?") + urlencode(params)


def _client_auth(client: SigninClient, form: dict[str, str]) -> dict[str, str]:
    headers = {"Accept": "application/json"}
    if client.token_auth == BASIC_AUTH and client.client_secret is not None:
        raw = f"{quote_plus(client.client_id)}:{quote_plus(client.client_secret.decode())}"
        headers["Authorization"] = "Basic " + base64.b64encode(raw.encode()).decode()
    else:
        form["client_id"] = client.client_id
        if client.client_secret is not None:
            form["client_secret"] = client.client_secret.decode()
    return headers


async def redeem_code(
    services: Services, token_endpoint: str, client: SigninClient, code: str, redirect_uri: str, verifier: str
) -> str:
    """The id_token for ``code``; raises ``token_exchange_failed`` / ``token_endpoint_unavailable``."""
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
    form["code_verifier"] = verifier
    headers = _client_auth(client, form)
    try:
        session = await services.outbound()
        async with session.post(token_endpoint, data=form, headers=headers, allow_redirects=False) as resp:
            body, status = await resp.json(content_type=None), resp.status
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        raise VerificationError("token_endpoint_unavailable", type(exc).__name__) from None
    token = body.get("id_token") if isinstance(body, dict) else None
    if status != 200 or not isinstance(token, str):
        err = body.get("error") if isinstance(body, dict) else None
        raise VerificationError("token_exchange_failed", f"status {status} {str(err)[:40]}")
    return token
