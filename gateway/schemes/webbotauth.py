"""Web Bot Auth as an evidence scheme: a valid RFC 9421 signature from a declared
agent makes the client ``verified-agent``, the agent operator its subject.

```toml
[webbotauth]
directories = ["https://signer.example"]   # agents whose key directories we fetch
# allow_any_agent = false                  # fetch any https agent's directory
signature_window = 300                     # created at most this old (expires - created: at most 24 h)
directory_ttl = 3600                       # when the directory sends no max-age
[[webbotauth.keys]]                        # static keys (no fetch)
jwk = { kty = "OKP", crv = "Ed25519", x = "..." }   # or jwks_file = "..."
operator = "crawler.example"
```

``allow_http_directories = true`` (tests on 127.0.0.1 only) accepts http agents
and IP-literal hosts. Nonces (the verifier's ``spend``) are claimed once in the store; the request body is
never read (Web Bot Auth signs ``@authority`` or ``@target-uri``, and ``Signature-Agent``). The
rule is :func:`verifiers.webbotauth.request_policy`, the same in ``popgate verify webbotauth``.
The table is validated by the config loader (:mod:`gateway.schemes.webbotauth_config`).
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from popgate.gateway.pipeline.context import Attestation, Context
from popgate.gateway.registry import Registry, Services
from popgate.gateway.schemes.webbotauth_config import WebBotAuthSettings, parse_settings
from popgate.gateway.schemes.zklogin import _GuardedStore, _LazySession, request_scheme
from popgate.gateway.stores.base import spend
from popgate.verifiers.httpsig import RequestView
from popgate.verifiers.webbotauth import TAG, KeyDirectory, WebBotAuthVerifier, request_policy

_MARK = 'tag="' + TAG + '"'


class WebBotAuthScheme:
    """``Signature-Input`` with ``tag="web-bot-auth"`` → ``verified-agent``."""

    name = "webbotauth"

    def __init__(self, verifier: WebBotAuthVerifier, services: Services) -> None:
        self.verifier, self.metrics = verifier, services.metrics
        self.replay = _GuardedStore(services.store, services.failure)
        self.trusted = bool(services.config.trusted_proxies)

    def extract(self, request: web.BaseRequest) -> str | None:
        headers = request.headers
        si = headers.get("Signature-Input")
        if si is None or _MARK not in si or "Signature" not in headers:
            return None
        return si

    async def verify(self, ctx: Context, evidence: Any) -> Attestation:
        started = time.perf_counter()
        request = ctx.request
        view = RequestView.from_aiohttp(request, None, request_scheme(request, self.trusted))
        att = await self.verifier.verify(view, now=ctx.now)
        if att.spend is not None:
            await spend(self.replay, att.spend)
        self.metrics.verify_seconds.labels(self.name).observe(time.perf_counter() - started)
        return Attestation(
            "verified-agent",
            att.subject,
            self.name,
            extra={"keyid": att.keyid, "agent": att.agent, "signature": att},
        )


def webbotauth_extension(registry: Registry, services: Services) -> None:
    """Register the ``webbotauth`` scheme from the validated ``[webbotauth]``; absent table: off."""
    s: WebBotAuthSettings | None = services.config.features.webbotauth
    if s is None:
        return
    n = s.numbers
    directory = None
    if s.directories or s.allow_any_agent:
        directory = KeyDirectory(
            _LazySession(services),  # type: ignore[arg-type]
            allow_insecure=s.allow_http_directories,
            default_ttl=n["directory_ttl"],
            min_ttl=n["directory_min_ttl"],
            failure_ttl=n["directory_failure_ttl"],
            max_agents=n["max_agents"],
        )
    policy = request_policy(
        window=n["signature_window"], clock_skew=n["clock_skew"], require_nonce=s.require_nonce
    )
    verifier = WebBotAuthVerifier(
        static=s.static,
        directory=directory,
        policy=policy,
        allow_insecure_agents=s.allow_http_directories,
        allowed_agents=None if s.allow_any_agent else s.directories,
    )
    registry.schemes.append(WebBotAuthScheme(verifier, services))


__all__ = ["WebBotAuthScheme", "parse_settings", "webbotauth_extension"]
