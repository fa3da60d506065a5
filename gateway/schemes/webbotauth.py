"""Web Bot Auth as an evidence scheme: a valid RFC 9421 signature from a declared
agent makes the client ``verified-agent``, the agent operator its subject.

```toml
[webbotauth]
directories = ["https://signer.example"]   # agents whose key directories we fetch
# allow_any_agent = false                  # fetch any https agent's directory
signature_window = 300                     # created at most this old
directory_ttl = 3600                       # when the directory sends no max-age
[[webbotauth.keys]]                        # static keys (no fetch)
jwk = { kty = "OKP", crv = "Ed25519", x = "..." }   # or jwks_file = "..."
operator = "crawler.example"
```

``allow_http_directories = true`` (tests on 127.0.0.1 only) accepts http agents
and IP-literal hosts. Nonces (the verifier's ``spend``) are claimed once in the store; the request body is
never read (Web Bot Auth signs ``@authority`` and ``Signature-Agent``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from popgate.gateway.app import Gateway, Services
from popgate.gateway.ops import validation as pc
from popgate.gateway.ops.config import ConfigError
from popgate.gateway.pipeline.context import Attestation, Context
from popgate.gateway.schemes.zklogin import _GuardedStore, _LazySession, request_scheme
from popgate.gateway.stores.base import spend
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.httpsig import Policy, RequestView
from popgate.verifiers.webbotauth import (
    TAG,
    KeyDirectory,
    StaticKey,
    WebBotAuthVerifier,
    agent_origin,
    static_keys_from_jwks,
)

_MARK = 'tag="' + TAG + '"'
_NUMBERS = {
    "signature_window": (300, 1, 86400),
    "clock_skew": (30, 0, 600),
    "directory_ttl": (3600, 1, 7 * 86400),
    "directory_min_ttl": (60, 0, 86400),
    "directory_failure_ttl": (60, 1, 86400),
    "max_agents": (1024, 1, 10**6),
}
_BOOLS = {"allow_any_agent": False, "allow_http_directories": False, "require_nonce": False}


@dataclass(frozen=True)
class WebBotAuthSettings:
    static: dict[str, StaticKey]
    directories: frozenset[str]
    numbers: dict[str, int]
    allow_any_agent: bool
    allow_http_directories: bool
    require_nonce: bool


def parse_settings(raw: Any) -> WebBotAuthSettings:
    """Validate ``[webbotauth]``; raise ConfigError with every problem."""
    problems: list[str] = []
    c = pc.Collector({"webbotauth": raw}, problems)
    t = c.table("webbotauth")
    c.unknown_keys("webbotauth", t, {"keys", "directories", *_NUMBERS, *_BOOLS})
    nums: dict[str, int] = {}
    for name, (default, lo, hi) in _NUMBERS.items():
        v = c.number(f"webbotauth.{name}", t.get(name, default), lo=lo, hi=hi, integer=True)
        nums[name] = int(v) if v is not None else default
    bools: dict[str, bool] = {}
    for name, default in _BOOLS.items():
        bools[name] = t.get(name, default)
        if not isinstance(bools[name], bool):
            c.problem(f"webbotauth.{name}", f"expected true or false, got {bools[name]!r}")
            bools[name] = default
    static: dict[str, StaticKey] = {}
    keys = t.get("keys", [])
    if not isinstance(keys, list):
        c.problem("webbotauth.keys", "expected a list of tables")
        keys = []
    for i, k in enumerate(keys):
        path = f"webbotauth.keys[{i}]"
        if not isinstance(k, dict):
            c.problem(path, "expected a table with jwk or jwks_file")
            continue
        c.unknown_keys(path, k, {"jwk", "jwks_file", "operator"})
        op = k.get("operator")
        if op is not None and not (isinstance(op, str) and op):
            c.problem(f"{path}.operator", "expected a non-empty string")
            op = None
        try:
            if ("jwk" in k) == ("jwks_file" in k):
                c.problem(path, "give exactly one of jwk, jwks_file")
                continue
            jwks = (
                {"keys": [k["jwk"]]}
                if "jwk" in k
                else json.loads(Path(str(k["jwks_file"])).read_text(encoding="utf-8"))
            )
            found = static_keys_from_jwks(jwks, op)
        except (OSError, ValueError, Malformed) as exc:
            c.problem(path, f"unusable key: {exc}")
            continue
        if not found:
            c.problem(path, "no Ed25519/EC key found")
        static.update(found)
    dirs = t.get("directories", [])
    origins = set()
    if not isinstance(dirs, list):
        c.problem("webbotauth.directories", "expected a list of agent origins")
        dirs = []
    for i, d in enumerate(dirs):
        try:
            origins.add(agent_origin(str(d), allow_insecure=bools["allow_http_directories"]))
        except VerificationError:
            c.problem(
                f"webbotauth.directories[{i}]",
                f"not an https origin: {d!r} (allow_http_directories = true for tests)",
            )
    if not static and not origins and not bools["allow_any_agent"]:
        c.problem(
            "webbotauth", "no keys, no directories and allow_any_agent = false: nothing could ever verify"
        )
    if problems:
        raise ConfigError(problems)
    return WebBotAuthSettings(static, frozenset(origins), nums, **bools)


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


def webbotauth_extension(gateway: Gateway, services: Services) -> None:
    """Register the ``webbotauth`` scheme from ``[webbotauth]``; absent table: off.

    Raises ConfigError listing every problem.
    """
    raw = services.config.raw.get("webbotauth")
    if raw is None:
        return
    s = parse_settings(raw)
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
    policy = Policy(
        required=('"@authority"',),
        tag=TAG,
        algorithms=frozenset({"ed25519"}),
        max_age=n["signature_window"],
        max_validity=max(n["signature_window"], 3600),
        clock_skew=n["clock_skew"],
        require_nonce=s.require_nonce,
        digest_with_body=False,
        replay_kind="wba-nonce",
    )
    verifier = WebBotAuthVerifier(
        static=s.static,
        directory=directory,
        policy=policy,
        allow_insecure_agents=s.allow_http_directories,
        allowed_agents=None if s.allow_any_agent else s.directories,
    )
    gateway.schemes.append(WebBotAuthScheme(verifier, services))


__all__ = ["WebBotAuthScheme", "parse_settings", "webbotauth_extension"]
