"""``[zklogin]`` settings, validated once at start-up (every problem with its key path).

```toml
[zklogin]
epoch_mode = "unix"            # or "sui": max_epoch is a Sui epoch
# current_epoch = 812          # sui mode: a fixed current epoch, or
# sui_rpc = "https://fullnode.mainnet.sui.io:443"   # ... read it from a Sui RPC:
# sui_epoch_cache = 60         #   seconds between reads; sui_rpc_timeout = 5 per read;
# sui_epoch_max_stale = 3600   #   the last epoch read is used this long while the RPC is away
session_ttl = 3600             # capped by max_epoch in unix mode
signature_window = 300         # per-request signatures: created within, expires at most this ahead
salt = { secret_file = "/run/secrets/zklogin-salt" }   # optional: subject = zkLogin address
rate_limit = 30                # exchanges per client network per rate_window seconds
jwks_timeout = 5.0             # one JWKS fetch, seconds (then the cached keys, within jwks_max_stale)
proofs = false                 # also accept full zkLogin proofs (Groth16, the JWT never sent)
proof_workers = 1              # their verification processes
proof_queue_limit = 16         # proofs waiting beyond the workers, then 503
# proof_vk_file = "zklogin-test.vk.json"   # default: the zkLogin production key
[[zklogin.providers]]
issuer = "https://accounts.google.com"
audience = "1234.apps.googleusercontent.com"       # or audiences = [...]
jwks_url = "https://www.googleapis.com/oauth2/v3/certs"   # or jwks_file = "..."
# Browser sign-in (authorization code + PKCE, :mod:`gateway.schemes.oidc_signin`), per provider:
# name = "google"                                  # required with client_id: the URL segment
# client_id = "1234.apps.googleusercontent.com"    # the id_token audience for sign-in
# client_secret = { secret_file = "/run/secrets/google-client-secret" }   # or secret_env
# token_auth = "client_secret_basic"               # or "client_secret_post"
# discovery_url = "https://accounts.google.com/.well-known/openid-configuration"   # the default
# [zklogin] signin_session_ttl = 900; signin_flow_ttl = 600; discovery_ttl = 3600
# signin_base_url = "https://gateway.example"      # redirect_uri base (default: the request's)
```
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from popgate.gateway.ops import validation as pc
from popgate.gateway.ops.validation import ConfigError, read_secret
from popgate.gateway.schemes.oidc_signin_config import SIGNIN_KEYS, SigninClient, collect_signin
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.groth16 import parse_vk
from popgate.verifiers.jwks import ProviderConfig

log = logging.getLogger("popgate.zklogin")

_NUMBERS: dict[str, tuple[float, float, float, bool]] = {
    # name: (default, lo, hi, integer)
    "session_ttl": (3600, 1, 30 * 86400, True),
    "signature_window": (300, 1, 3600, True),
    "clock_skew": (30, 0, 600, True),
    "rate_limit": (30, 1, 10**9, True),
    "rate_window": (60, 1, 86400, True),
    "max_session": (7 * 86400, 60, 365 * 86400, True),
    "max_epoch_delta": (30, 0, 10**6, True),
    "jwks_refetch_interval": (30, 0, 86400, False),
    "jwks_max_stale": (6 * 3600, 0, 7 * 86400, False),
    "jwks_timeout": (5.0, 0.1, 60, False),
    "sui_epoch_cache": (60, 0, 86400, False),
    "sui_rpc_timeout": (5.0, 0.1, 60, False),
    "sui_epoch_max_stale": (3600, 0, 7 * 86400, False),
    "proof_workers": (1, 1, 64, True),
    "proof_queue_limit": (16, 0, 100000, True),
    "signin_session_ttl": (900, 60, 86400, True),
    "signin_flow_ttl": (600, 30, 3600, True),
    "discovery_ttl": (3600, 0, 86400, False),
}
_BOOLS = {"padded_address": True, "require_request_nonce": False, "allow_http_jwks": False, "proofs": False}
_PROVIDER_KEYS = {
    "issuer",
    "audience",
    "audiences",
    "jwks_url",
    "jwks_file",
    "algorithms",
    "leeway",
    "max_token_age",
    "name",
    *SIGNIN_KEYS,
}


class FixedEpoch:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    async def current(self, now: float) -> int:
        return self.epoch


class SuiRpcEpoch:
    """The current Sui epoch from ``suix_getLatestSuiSystemState``.

    Cached ``ttl`` seconds; one fetch at a time (concurrent exchanges share it,
    each fetch bounded by ``timeout``); after a failed fetch none is tried for
    ``retry`` seconds (the cache period, at most 5 s). The last known epoch is
    served for up to ``max_stale`` seconds after it was read (a Sui epoch lasts
    about a day), then the exchange fails closed with ``epoch_unavailable`` (503)."""

    def __init__(
        self,
        url: str,
        services: Any,
        *,
        ttl: float = 60.0,
        timeout: float = 5.0,
        max_stale: float = 3600.0,
        retry: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url, self.services, self.clock = url, services, clock
        self.ttl, self.timeout, self.max_stale, self.retry = ttl, timeout, max_stale, retry
        self._value: int | None = None
        self._read_at = self._next_try = float("-inf")
        self._flight: asyncio.Future[None] | None = None
        self._error = "no Sui epoch yet"

    async def current(self, now: float) -> int:
        if self._value is not None and self.clock() - self._read_at < self.ttl:
            return self._value
        if self.clock() >= self._next_try:
            if self._flight is None or self._flight.done():
                self._flight = asyncio.ensure_future(self._fetch())
            await asyncio.shield(self._flight)
        if self._value is not None and self.clock() - self._read_at <= self.max_stale:
            return self._value  # fresh, or the last known one while the RPC is away
        raise VerificationError("epoch_unavailable", self._error)

    async def _fetch(self) -> None:
        body = {"jsonrpc": "2.0", "id": 1, "method": "suix_getLatestSuiSystemState", "params": []}
        try:
            session = await self.services.outbound()
            async with session.post(
                self.url, json=body, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as resp:
                data = await resp.json(content_type=None)
            epoch = int(data["result"]["epoch"])
            if not 0 <= epoch < 2**64:
                raise ValueError("epoch out of range")
        except Exception as exc:
            self._next_try = self.clock() + self.retry
            self._error = f"sui rpc: {type(exc).__name__}"
            log.warning("sui epoch fetch failed: %s: %s", type(exc).__name__, exc)
            return
        self._value, self._read_at, self._next_try = epoch, self.clock(), float("-inf")


@dataclass(frozen=True)
class ZkLoginSettings:
    providers: tuple[ProviderConfig, ...]
    epoch_mode: str
    current_epoch: int | None
    sui_rpc: str | None
    salt: int | None
    session_ttl: int
    signature_window: int
    clock_skew: int
    rate_limit: int
    rate_window: int
    max_session: int
    max_epoch_delta: int
    jwks_refetch_interval: float
    jwks_max_stale: float
    jwks_timeout: float
    padded_address: bool
    require_request_nonce: bool
    allow_http_jwks: bool
    sui_epoch_cache: float
    sui_rpc_timeout: float
    sui_epoch_max_stale: float
    proofs: bool
    proof_workers: int
    proof_queue_limit: int
    signin_session_ttl: int = 900
    signin_flow_ttl: int = 600
    discovery_ttl: float = 3600.0
    signin_base_url: str | None = None
    signin: tuple[SigninClient, ...] = ()
    proof_vk: dict[str, Any] | None = None  # None: the production key

    def epoch_source(self, services: Any) -> Any:
        if self.epoch_mode != "sui":
            return None
        if self.current_epoch is not None:
            return FixedEpoch(self.current_epoch)
        if self.sui_rpc is None:  # validation requires sui_rpc or current_epoch for epoch_mode "sui"
            raise ValueError("zklogin: epoch_mode sui needs sui_rpc or current_epoch")
        return SuiRpcEpoch(
            self.sui_rpc,
            services,
            ttl=self.sui_epoch_cache,
            timeout=self.sui_rpc_timeout,
            max_stale=self.sui_epoch_max_stale,
            retry=min(5.0, self.sui_epoch_cache),
        )


def _provider(c: pc.Collector, path: str, t: Any, allow_http: bool) -> ProviderConfig | None:
    if not isinstance(t, dict):
        c.problem(path, "expected a table")
        return None
    c.unknown_keys(path, t, _PROVIDER_KEYS)
    issuer = t.get("issuer")
    if not isinstance(issuer, str) or not issuer:
        c.problem(f"{path}.issuer", "required: the exact iss string")
    auds = t.get("audiences", [t["audience"]] if "audience" in t else None)
    if not isinstance(auds, list) or not auds or not all(isinstance(a, str) and a for a in auds):
        c.problem(f"{path}.audience", "required: a client id string (or audiences = [...])")
        auds = None
    url, file = t.get("jwks_url"), t.get("jwks_file")
    if (url is None) == (file is None):
        c.problem(path, "give exactly one of jwks_url, jwks_file")
    if url is not None:
        parts = urlsplit(str(url))
        if parts.scheme != "https" and not (allow_http and parts.scheme == "http"):
            c.problem(f"{path}.jwks_url", "must be https:// (allow_http_jwks = true for tests)")
    if file is not None and not os.path.isfile(str(file)):
        c.problem(f"{path}.jwks_file", f"no such file: {file}")
    algs = t.get("algorithms", ["RS256"])
    if not isinstance(algs, list) or not all(isinstance(a, str) for a in algs):
        c.problem(f"{path}.algorithms", "expected a list of JWS algorithm names")
        algs = ["RS256"]
    leeway = c.number(f"{path}.leeway", t.get("leeway", 60), lo=0, hi=600)
    age = c.number(f"{path}.max_token_age", t.get("max_token_age", 600), lo=1, hi=7 * 86400)
    if not isinstance(issuer, str) or not issuer or auds is None or (url is None) == (file is None):
        return None
    try:
        return ProviderConfig(
            issuer=issuer,
            audiences=frozenset(auds),
            jwks_url=str(url) if url is not None else None,
            jwks_file=str(file) if file is not None else None,
            algorithms=tuple(algs),
            leeway=float(leeway or 60),
            max_token_age=float(age or 600),
            name=str(t.get("name", "")),
        )
    except ValueError as exc:
        c.problem(path, str(exc))
        return None


def parse_settings(raw: Any, env: Any = None) -> ZkLoginSettings:
    """Validate ``[zklogin]``; raise ConfigError with every problem."""
    problems: list[str] = []
    settings = collect_settings(pc.Collector({}, problems), raw, env)
    if settings is None:
        raise ConfigError(problems)
    return settings


def collect_settings(c: pc.Collector, raw: Any, env: Any = None) -> ZkLoginSettings | None:
    """Validate ``[zklogin]``, recording every problem in ``c``; None when there were any."""
    before = len(c.problems)
    t = c.table("zklogin", {"zklogin": raw})
    env = os.environ if env is None else env
    c.unknown_keys(
        "zklogin",
        t,
        {
            "providers",
            "epoch_mode",
            "current_epoch",
            "sui_rpc",
            "salt",
            "proof_vk_file",
            "signin_base_url",
            *_NUMBERS,
            *_BOOLS,
        },
    )
    vals: dict[str, Any] = {}
    for name, (default, lo, hi, integer) in _NUMBERS.items():
        v = c.number(f"zklogin.{name}", t.get(name, default), lo=lo, hi=hi, integer=integer)
        vals[name] = v if v is not None else default
    for name, default in _BOOLS.items():
        vals[name] = t.get(name, default)
        if not isinstance(vals[name], bool):
            c.problem(f"zklogin.{name}", f"expected true or false, got {vals[name]!r}")
            vals[name] = default
    raw_providers = t.get("providers")
    providers, signin = [], []
    if not isinstance(raw_providers, list) or not raw_providers:
        c.problem("zklogin.providers", "at least one [[zklogin.providers]] table is required")
    else:
        for i, p in enumerate(raw_providers):
            got = _provider(c, f"zklogin.providers[{i}]", p, vals["allow_http_jwks"])
            if got is not None:
                providers.append(got)
            client = (
                collect_signin(c, f"zklogin.providers[{i}]", p, env, vals["allow_http_jwks"]) if got else None
            )
            if client is not None:
                signin.append(client)
        if len({s.name for s in signin}) != len(signin):
            c.problem("zklogin.providers", "two sign-in providers have the same name")
        issuers = [p.issuer for p in providers]
        if len(set(issuers)) != len(issuers):
            c.problem("zklogin.providers", "an issuer is listed twice")
    mode = t.get("epoch_mode", "unix")
    current, rpc = t.get("current_epoch"), t.get("sui_rpc")
    if mode not in ("unix", "sui"):
        c.problem("zklogin.epoch_mode", f'expected "unix" or "sui", got {mode!r}')
    elif mode == "sui" and (current is None) == (rpc is None):
        c.problem("zklogin", 'epoch_mode = "sui" needs exactly one of current_epoch, sui_rpc')
    if current is not None:
        c.number("zklogin.current_epoch", current, lo=0, hi=2**64 - 1, integer=True)
    if rpc is not None and urlsplit(str(rpc)).scheme not in ("https", "http"):
        c.problem("zklogin.sui_rpc", "expected an http(s) URL")
    salt = None
    if "salt" in t:
        st = t["salt"]
        if not isinstance(st, dict):
            c.problem("zklogin.salt", "expected a table with secret_file or secret_env")
        else:
            secret = read_secret(c, "zklogin.salt", st, env)
            if secret is not None:  # one operator salt < 2^128, as Sui's docs require
                salt = int.from_bytes(
                    hmac.new(secret, b"popgate zklogin salt v1", hashlib.sha256).digest()[:16], "big"
                )
    vk = _proof_key(c, t.get("proof_vk_file"))
    base = t.get("signin_base_url")
    if base is not None and (
        not isinstance(base, str) or urlsplit(base).scheme not in ("https", "http") or urlsplit(base).path
    ):
        c.problem("zklogin.signin_base_url", "expected scheme://host[:port] with no path")
    if len(c.problems) > before:
        return None
    return ZkLoginSettings(
        providers=tuple(providers),
        epoch_mode=str(mode),
        current_epoch=int(current) if current is not None else None,
        sui_rpc=str(rpc) if rpc is not None else None,
        salt=salt,
        proof_vk=vk,
        signin=tuple(signin),
        signin_base_url=base,
        **vals,
    )


def _proof_key(c: pc.Collector, path: Any) -> dict[str, Any] | None:
    """``proof_vk_file``: a snarkjs key with one public input."""
    if path is None:
        return None
    vk: dict[str, Any] | None = pc.read_vk_file(c, "zklogin.proof_vk_file", str(path))
    if vk is not None and parse_vk(vk).n_public != 1:
        c.problem("zklogin.proof_vk_file", "a zkLogin key has exactly one public input")
        return None
    return vk
