"""The browser sign-in client of a ``[[zklogin.providers]]`` entry (validated with the rest).

Keys beside the provider's ``issuer``/``audience``/``jwks_url``: ``name`` (the URL segment),
``client_id``, ``client_secret = { secret_file | secret_env }``, ``token_auth``
(``client_secret_basic`` | ``client_secret_post`` | ``none``), ``discovery_url`` (default:
issuer + ``/.well-known/openid-configuration``), ``scopes`` (default ``openid``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from popgate.gateway.ops import validation as pc

SIGNIN_KEYS = {"client_id", "client_secret", "token_auth", "discovery_url", "scopes"}
NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class SigninClient:
    """One provider's browser sign-in client (authorization code + PKCE)."""

    name: str
    issuer: str
    client_id: str
    client_secret: bytes | None
    token_auth: str
    discovery_url: str
    scopes: str = "openid"


def _secret_and_auth(c: pc.Collector, path: str, t: dict[str, Any], env: Any) -> tuple[bytes | None, str]:
    """The client secret (from a file or the environment) and how it goes to the token endpoint."""
    secret = None
    if "client_secret" in t:
        st = t["client_secret"]
        if isinstance(st, dict):
            secret = pc.read_secret(c, f"{path}.client_secret", st, env)
        else:
            c.problem(f"{path}.client_secret", "expected a table with secret_file or secret_env")
    auth = t.get("token_auth", "client_secret_basic" if "client_secret" in t else "none")
    if auth not in ("client_secret_basic", "client_secret_post", "none"):
        c.problem(f"{path}.token_auth", 'expected "client_secret_basic", "client_secret_post" or "none"')
    elif (auth == "none") != ("client_secret" not in t):
        c.problem(
            f"{path}.token_auth",
            f"{auth!r} does not fit {'no ' if 'client_secret' not in t else ''}client_secret",
        )
    return secret, str(auth)


def collect_signin(
    c: pc.Collector, path: str, t: dict[str, Any], env: Any, allow_http: bool
) -> SigninClient | None:
    """A provider's sign-in client (None without ``client_id``)."""
    if "client_id" not in t:
        for k in ("client_secret", "token_auth", "discovery_url", "scopes"):
            if k in t:
                c.problem(f"{path}.{k}", "only with client_id (browser sign-in)")
        return None
    cid, name, issuer = t["client_id"], t.get("name"), str(t.get("issuer", ""))
    if not isinstance(cid, str) or not cid:
        c.problem(f"{path}.client_id", "expected the OAuth client id string")
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        c.problem(f"{path}.name", "required with client_id: 1-32 of a-z 0-9 _ - (the sign-in URL segment)")
    secret, auth = _secret_and_auth(c, path, t, env)
    disc = t.get("discovery_url", issuer.rstrip("/") + "/.well-known/openid-configuration")
    scheme = urlsplit(str(disc)).scheme
    if scheme != "https" and not (allow_http and scheme == "http"):
        c.problem(f"{path}.discovery_url", "must be https:// (allow_http_jwks = true for tests)")
    scopes = t.get("scopes", "openid")
    if not isinstance(scopes, str) or "openid" not in scopes.split():
        c.problem(f"{path}.scopes", 'a space-separated scope string including "openid"')
    if not isinstance(cid, str) or not isinstance(name, str) or not isinstance(scopes, str):
        return None
    return SigninClient(name, issuer, cid, secret, auth, str(disc), scopes)
