"""JWKS retrieval and caching for OIDC providers.

A :class:`JwksCache` holds one key set per provider. Keys come from a static
JWKS given in config, or are fetched over HTTP with an injected
``aiohttp.ClientSession``:

* a fetched set is fresh for ``Cache-Control: max-age`` seconds (clamped to
  ``[min_max_age, max_max_age]``; ``default_max_age`` when absent);
* a ``kid`` missing from a fresh set triggers one refetch, at most once per
  ``refetch_interval`` seconds per provider (key rotation without letting
  random kids hammer the provider);
* when a fetch fails the previous set is served for up to ``max_stale``
  seconds past its expiry, then lookups fail with ``jwks_unavailable``.

Concurrent lookups for one provider share a single fetch, failed or not:
lookups that waited for it do not fetch again. Time is passed in
(``now``, unix seconds); nothing here reads the clock.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import jwt

from popgate.verifiers.errors import VerificationError

__all__ = ["Jwk", "JwksCache", "ProviderConfig", "parse_jwks"]

_MAX_JWKS_BYTES = 256 * 1024
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)


@dataclass(frozen=True)
class ProviderConfig:
    """One trusted OIDC issuer, validated at construction.

    Exactly one of ``jwks_url`` / ``jwks`` (a JWKS dict) / ``jwks_file`` must
    be set. ``algorithms`` defaults to RS256 only. Raises ValueError when
    inconsistent.
    """

    issuer: str
    audiences: frozenset[str]
    jwks_url: str | None = None
    jwks: Mapping[str, Any] | None = None
    jwks_file: str | None = None
    algorithms: tuple[str, ...] = ("RS256",)
    leeway: float = 60.0
    max_token_age: float = 600.0
    name: str = ""
    required_claims: tuple[str, ...] = field(default=("iss", "aud", "sub", "iat", "exp"))

    def __post_init__(self) -> None:
        if not self.issuer:
            raise ValueError("provider issuer is empty")
        if not self.audiences or not all(isinstance(a, str) and a for a in self.audiences):
            raise ValueError(f"provider {self.issuer}: audiences must be non-empty strings")
        sources = [self.jwks_url is not None, self.jwks is not None, self.jwks_file is not None]
        if sum(sources) != 1:
            raise ValueError(f"provider {self.issuer}: give exactly one of jwks_url, jwks, jwks_file")
        if self.jwks_url is not None and not self.jwks_url.startswith(("https://", "http://")):
            raise ValueError(f"provider {self.issuer}: jwks_url must be http(s)")
        bad = [a for a in self.algorithms if a in ("none", "") or a.startswith("HS")]
        if not self.algorithms or bad:
            raise ValueError(f"provider {self.issuer}: algorithms {bad or '[]'} not allowed")
        if self.leeway < 0 or self.max_token_age <= 0:
            raise ValueError(f"provider {self.issuer}: bad leeway/max_token_age")


@dataclass(frozen=True)
class Jwk:
    """One usable public key: the key object, its ``alg`` (None if the JWK
    has none) and ``kty``."""

    kid: str
    key: Any
    alg: str | None
    kty: str


_DEFAULT_ALG = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}


def parse_jwks(data: Any, algorithms: tuple[str, ...] = ("RS256",)) -> dict[str, Jwk]:
    """Return usable keys by ``kid``. Keys without a ``kid``, with a ``use``
    other than ``sig``, of an unsupported type, or whose ``alg`` is not in
    ``algorithms`` are skipped (like Sui skips non-RSA keys). Raises
    VerificationError(malformed) when ``data`` is not a JWKS object.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("keys"), list):
        raise VerificationError("malformed", "JWKS has no keys array")
    keys: dict[str, Jwk] = {}
    for raw in data["keys"]:
        if not isinstance(raw, Mapping):
            continue
        kid, alg, use = raw.get("kid"), raw.get("alg"), raw.get("use", "sig")
        if not isinstance(kid, str) or not kid or use != "sig" or kid in keys:
            continue
        if alg is not None and alg not in algorithms:
            continue
        if raw.get("kty") == "RSA" and raw.get("e") not in (None, "AQAB"):
            continue  # fastcrypto/zkLogin only accept e = 65537
        kty = raw.get("kty")
        if not isinstance(kty, str) or kty not in _DEFAULT_ALG:
            continue
        try:
            parsed = jwt.PyJWK(dict(raw), algorithm=alg if isinstance(alg, str) else _DEFAULT_ALG[kty])
            keys[kid] = Jwk(kid=kid, key=parsed.key, alg=alg if isinstance(alg, str) else None, kty=kty)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            continue
    return keys


def _max_age(header: str | None) -> float | None:
    if not header or "no-store" in header.lower() or "no-cache" in header.lower():
        return None if not header else 0.0
    m = _MAX_AGE.search(header)
    return float(m.group(1)) if m else None


@dataclass
class _Entry:
    keys: dict[str, Jwk]
    expires: float
    last_fetch: float
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    fetched_once: bool = False
    finished: int = 0  # fetch attempts finished (a lookup that waited for one does not repeat it)


class JwksCache:
    """Per-provider key sets; see the module docstring for the rules."""

    def __init__(
        self,
        session: aiohttp.ClientSession | None = None,
        *,
        refetch_interval: float = 30.0,
        default_max_age: float = 300.0,
        min_max_age: float = 30.0,
        max_max_age: float = 86400.0,
        max_stale: float = 6 * 3600.0,
        timeout: float = 5.0,
    ) -> None:
        self._session = session
        self._refetch_interval = refetch_interval
        self._default_max_age = default_max_age
        self._min_max_age = min_max_age
        self._max_max_age = max_max_age
        self._max_stale = max_stale
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._entries: dict[str, _Entry] = {}
        self.fetches = 0  # HTTP fetch attempts, for metrics and tests

    async def get_key(self, provider: ProviderConfig, kid: str, now: float) -> Jwk:
        """Return the key ``kid`` of ``provider``.

        Raises VerificationError ``unknown_kid`` when the (possibly refetched)
        set lacks it, ``jwks_unavailable`` when no usable set can be had.
        """
        entry = self._entries.get(provider.issuer)
        if entry is None:
            entry = self._entries[provider.issuer] = _Entry({}, float("-inf"), float("-inf"))
        if provider.jwks_url is None:
            if not entry.fetched_once:
                entry.keys = parse_jwks(self._static(provider), provider.algorithms)
                entry.fetched_once = True
            return self._lookup(entry, kid)
        if entry.fetched_once and now < entry.expires and kid in entry.keys:
            return entry.keys[kid]
        finished = entry.finished
        async with entry.lock:  # one fetch at a time per provider
            stale = not entry.fetched_once or now >= entry.expires
            may_refetch = now - entry.last_fetch >= self._refetch_interval
            # A fetch that ran while this lookup waited for the lock is its
            # fetch too: a failed one is not repeated once per waiter (with a
            # slow endpoint that was a queue of timeouts, one after another).
            waited_for_one = entry.finished != finished
            if (
                (stale or kid not in entry.keys)
                and (may_refetch or not entry.fetched_once)
                and not waited_for_one
            ):
                await self._fetch(provider, entry, now)
            if not entry.fetched_once or now >= entry.expires + self._max_stale:
                raise VerificationError("jwks_unavailable", f"no key set for {provider.issuer}")
            return self._lookup(entry, kid)

    @staticmethod
    def _lookup(entry: _Entry, kid: str) -> Jwk:
        key = entry.keys.get(kid)
        if key is None:
            raise VerificationError("unknown_kid", f"kid {kid!r} not in JWKS")
        return key

    @staticmethod
    def _static(provider: ProviderConfig) -> Any:
        if provider.jwks is not None:
            return provider.jwks
        if provider.jwks_file is None:
            raise RuntimeError(f"provider {provider.issuer!r} has no static JWKS")
        return json.loads(Path(provider.jwks_file).read_text(encoding="utf-8"))

    async def _fetch(self, provider: ProviderConfig, entry: _Entry, now: float) -> None:
        """Refresh ``entry``; on any failure keep the old set (stale rules apply)."""
        if provider.jwks_url is None:
            raise RuntimeError(f"provider {provider.issuer!r} has no JWKS URL")
        if self._session is None:
            raise VerificationError("jwks_unavailable", "no HTTP session for JWKS fetches")
        entry.last_fetch = now
        self.fetches += 1
        try:
            await self._fetch_once(provider, entry, now)
        finally:
            entry.finished += 1

    async def _fetch_once(self, provider: ProviderConfig, entry: _Entry, now: float) -> None:
        if provider.jwks_url is None or self._session is None:  # _fetch checks both
            raise RuntimeError("JWKS fetch without a URL or an HTTP session")
        try:
            async with self._session.get(
                provider.jwks_url,
                timeout=self._timeout,
                allow_redirects=False,
                headers={"Accept": "application/json"},
            ) as resp:
                if resp.status != 200:
                    return
                body = await resp.content.read(_MAX_JWKS_BYTES + 1)
                cache_control = resp.headers.get("Cache-Control")
            if len(body) > _MAX_JWKS_BYTES:
                return
            keys = parse_jwks(json.loads(body), provider.algorithms)
        except (TimeoutError, aiohttp.ClientError, ValueError, VerificationError):
            return
        age = _max_age(cache_control)
        ttl = self._default_max_age if age is None else age
        ttl = min(max(ttl, self._min_max_age), self._max_max_age)
        entry.keys, entry.expires, entry.fetched_once = keys, now + ttl, True
