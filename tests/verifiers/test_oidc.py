"""OIDC id_token checks and the JWKS cache (against a real loopback JWKS server)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt as pyjwt
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from popgate.verifiers.errors import VerificationError
from popgate.verifiers.jwks import JwksCache, ProviderConfig, parse_jwks
from popgate.verifiers.oidc import OidcVerifier, decode_segment, parse_header
from tests.support.servers import serve_app

FIX = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "zklogin" / "jwt_cases.json").read_text()
)
NOW = FIX["now"]
ISS, AUD = FIX["issuer"], FIX["audience"]
K1 = pyjwt.PyJWK(FIX["private_jwk_k1"], "RS256").key
JWKS_K1 = {"keys": [FIX["jwks"]["keys"][0]]}


def token(kid: str = "k1", **claims: Any) -> str:
    body = {"iss": ISS, "aud": AUD, "sub": "u1", "iat": NOW - 10, "exp": NOW + 3600, "nonce": "n", **claims}
    return pyjwt.encode(body, K1, algorithm="RS256", headers={"kid": kid})


class JwksServer:
    """Serves a JWKS it can change, with a chosen status and Cache-Control; counts hits."""

    def __init__(self) -> None:
        self.jwks: Any = JWKS_K1
        self.status = 200
        self.cache_control: str | None = None
        self.hits = 0
        self.delay = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        return web.Response(
            status=self.status, text=json.dumps(self.jwks), headers=headers, content_type="application/json"
        )


@pytest.fixture
async def jwks_server() -> AsyncIterator[tuple[JwksServer, str]]:
    srv = JwksServer()
    app = web.Application()
    app.router.add_get("/jwks", srv.handle)
    async with serve_app(app) as port:
        yield srv, f"http://127.0.0.1:{port}/jwks"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def verifier(url: str, session: aiohttp.ClientSession, **kw: Any) -> tuple[OidcVerifier, JwksCache]:
    cache = JwksCache(session, **kw)
    p = ProviderConfig(issuer=ISS, audiences=frozenset([AUD]), jwks_url=url)
    return OidcVerifier([p], cache), cache


async def reason(coro: Any) -> str:
    try:
        await coro
    except VerificationError as e:
        return e.reason
    return "ok"


async def test_max_age_honoured(jwks_server: tuple[JwksServer, str], session: aiohttp.ClientSession) -> None:
    """A set is reused until Cache-Control max-age runs out, then fetched again."""
    srv, url = jwks_server
    srv.cache_control = "public, max-age=1000, must-revalidate"
    v, cache = verifier(url, session)
    await v.verify(token(), now=NOW)
    await v.verify(token(), now=NOW + 500)
    await cache.get_key(v.provider(ISS), "k1", NOW + 999)
    assert srv.hits == 1
    await cache.get_key(v.provider(ISS), "k1", NOW + 1001)
    assert srv.hits == 2 and cache.fetches == 2


async def test_default_ttl_without_header(
    jwks_server: tuple[JwksServer, str], session: aiohttp.ClientSession
) -> None:
    """No Cache-Control: the default TTL applies."""
    srv, url = jwks_server
    v, cache = verifier(url, session, default_max_age=120)
    p = v.provider(ISS)
    await cache.get_key(p, "k1", NOW)
    await cache.get_key(p, "k1", NOW + 119)
    assert srv.hits == 1
    await cache.get_key(p, "k1", NOW + 121)
    assert srv.hits == 2


async def test_unknown_kid_refetch_is_rate_limited(
    jwks_server: tuple[JwksServer, str], session: aiohttp.ClientSession
) -> None:
    """An unknown kid refetches at most once per 30 s; a rotated-in key is then found."""
    srv, url = jwks_server
    srv.cache_control = "max-age=3600"
    v, _ = verifier(url, session)
    await v.verify(token(), now=NOW)
    assert srv.hits == 1
    assert await reason(v.verify(token(kid="k9"), now=NOW + 5)) == "unknown_kid"
    assert srv.hits == 1  # the set was fetched 5 s ago: no refetch yet
    assert await reason(v.verify(token(kid="k9"), now=NOW + 31)) == "unknown_kid"
    assert srv.hits == 2
    for dt in (32, 40, 60):
        assert await reason(v.verify(token(kid=f"k{dt}"), now=NOW + dt)) == "unknown_kid"
    assert srv.hits == 2  # rate-limited: at most one fetch per 30 s
    srv.jwks = {"keys": [{**FIX["jwks"]["keys"][0], "kid": "k9"}]}  # rotation
    assert await reason(v.verify(token(kid="k9"), now=NOW + 62)) == "ok"
    assert srv.hits == 3


async def test_stale_served_within_bound(
    jwks_server: tuple[JwksServer, str], session: aiohttp.ClientSession
) -> None:
    """When the provider fails, the old set serves until max_stale past expiry."""
    srv, url = jwks_server
    srv.cache_control = "max-age=60"
    v, cache = verifier(url, session, max_stale=600)
    p = v.provider(ISS)
    await cache.get_key(p, "k1", NOW)
    srv.status = 500
    assert (await cache.get_key(p, "k1", NOW + 100)).kid == "k1"
    assert srv.hits == 2
    assert (await cache.get_key(p, "k1", NOW + 110)).kid == "k1"
    assert srv.hits == 2  # failed fetches are rate-limited too
    assert await reason(cache.get_key(p, "k1", NOW + 60 + 601)) == "jwks_unavailable"
    srv.status = 200
    assert (await cache.get_key(p, "k1", NOW + 60 + 700)).kid == "k1"


async def test_first_fetch_failure(
    jwks_server: tuple[JwksServer, str], session: aiohttp.ClientSession
) -> None:
    """No set ever fetched (500, junk JSON, or refused connection): jwks_unavailable."""
    srv, url = jwks_server
    srv.status = 500
    v, _ = verifier(url, session)
    assert await reason(v.verify(token(), now=NOW)) == "jwks_unavailable"
    srv.status, srv.jwks = 200, "not a jwks"
    v, _ = verifier(url, session)
    assert await reason(v.verify(token(), now=NOW)) == "jwks_unavailable"
    v, _ = verifier("http://127.0.0.1:9/jwks", session)
    assert await reason(v.verify(token(), now=NOW)) == "jwks_unavailable"


async def test_concurrent_lookups_share_one_fetch(
    jwks_server: tuple[JwksServer, str], session: aiohttp.ClientSession
) -> None:
    """20 simultaneous verifications on a cold cache make one HTTP request."""
    srv, url = jwks_server
    srv.delay = 0.05
    v, _ = verifier(url, session)
    results = await asyncio.gather(*(reason(v.verify(token(), now=NOW)) for _ in range(20)))
    assert results == ["ok"] * 20 and srv.hits == 1


def test_parse_jwks_skips_unusable_keys() -> None:
    """Keys with another alg, use=enc, odd e, no kid, or junk are skipped, not fatal."""
    good = FIX["jwks"]["keys"][0]
    keys = parse_jwks(
        {
            "keys": [
                good,
                {**good, "kid": "a", "alg": "RS512"},
                {**good, "kid": "b", "use": "enc"},
                {**good, "kid": "c", "e": "Aw"},
                {**good, "kid": None},
                "junk",
                {"kty": "RSA", "kid": "d", "n": "!!", "e": "AQAB"},
                FIX["jwks"]["keys"][2],
            ]
        }
    )
    assert list(keys) == ["k1"]


@pytest.mark.parametrize(
    "kw",
    [
        dict(audiences=frozenset()),
        dict(jwks=None),
        dict(algorithms=("HS256",)),
        dict(algorithms=("none",)),
        dict(jwks_url="file:///etc/passwd", jwks=None),
        dict(issuer=""),
    ],
)
def test_provider_config_rejects(kw: dict) -> None:
    """Invalid provider configs fail at construction."""
    base: dict[str, Any] = dict(issuer=ISS, audiences=frozenset([AUD]), jwks=JWKS_K1)
    with pytest.raises(ValueError):
        ProviderConfig(**{**base, **kw})


async def test_static_jwks_file(tmp_path: Path) -> None:
    """A provider can take its JWKS from a local file."""
    f = tmp_path / "jwks.json"
    f.write_text(json.dumps(FIX["jwks"]))
    p = ProviderConfig(issuer=ISS, audiences=frozenset([AUD]), jwks_file=str(f))
    claims = await OidcVerifier([p], JwksCache()).verify(token(), now=NOW)
    assert claims.sub == "u1" and claims.kid == "k1"


async def test_leeway_edges() -> None:
    """exp is honoured to the second with the leeway; iat may be leeway ahead."""
    p = ProviderConfig(issuer=ISS, audiences=frozenset([AUD]), jwks=JWKS_K1, leeway=5)
    v = OidcVerifier([p], JwksCache())
    assert await reason(v.verify(token(exp=NOW), now=NOW + 4)) == "ok"
    assert await reason(v.verify(token(exp=NOW), now=NOW + 5)) == "expired"
    assert await reason(v.verify(token(iat=NOW + 5), now=NOW)) == "ok"
    assert await reason(v.verify(token(iat=NOW + 6), now=NOW)) == "not_yet_valid"
    assert await reason(v.verify(token(iat=True), now=NOW)) == "malformed"
    assert await reason(v.verify(token(nonce=5), now=NOW)) == "malformed"


# --- parsers, property-based -------------------------------------------------------------


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


@given(st.binary(min_size=1, max_size=300))
def test_segment_roundtrip(b: bytes) -> None:
    """Strict base64url decodes exactly what encodes."""
    assert decode_segment(b64u(b)) == b


@given(st.binary(min_size=1, max_size=60))
def test_segment_rejects_noncanonical(b: bytes) -> None:
    """Padding, standard-alphabet chars or non-zero spare bits are refused."""
    s = b64u(b)
    variants = [s + "=", s.replace("-", "+").replace("_", "/") if ("-" in s or "_" in s) else s + "="]
    if len(b) % 3:
        last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".index(s[-1])
        variants.append(s[:-1] + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last | 1])
    for bad in variants:
        if bad == s:
            continue
        with pytest.raises(VerificationError):
            decode_segment(bad)


@given(st.text(max_size=400))
def test_parse_header_only_raises_verification_error(s: str) -> None:
    """Any string: a parsed header or a VerificationError, nothing else."""
    try:
        parse_header(s)
    except VerificationError:
        pass


JSONV = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=8,
)


@given(
    st.dictionaries(st.sampled_from(["alg", "kid", "typ", "jwk", "jku", "x5u", "x5c", "crit", "cty"]), JSONV),
    st.dictionaries(st.sampled_from(["iss", "aud", "sub", "iat", "exp", "nbf", "nonce"]), JSONV),
    st.binary(max_size=300),
)
async def test_verify_fuzzed_tokens(header: dict, payload: dict, sig: bytes) -> None:
    """Arbitrary header/payload JSON and signature bytes: always a VerificationError, and a
    forbidden header parameter is always refused as malformed."""
    p = ProviderConfig(issuer=ISS, audiences=frozenset([AUD]), jwks=FIX["jwks"])
    v = OidcVerifier([p], JwksCache())
    tok = ".".join([b64u(json.dumps(header).encode()), b64u(json.dumps(payload).encode()), b64u(sig)])
    with pytest.raises(VerificationError) as e:
        await v.verify(tok, now=NOW)
    if {"jwk", "jku", "x5u", "x5c", "crit"} & set(header) and sig:
        assert e.value.reason == "malformed"


@given(st.sampled_from(["jwk", "jku", "x5u", "x5c", "crit"]))
async def test_embedded_key_headers_refused_even_when_signed(param: str) -> None:
    """A correctly signed token with an embedded-key header is still refused."""
    p = ProviderConfig(issuer=ISS, audiences=frozenset([AUD]), jwks=JWKS_K1)
    tok = pyjwt.encode(
        {"iss": ISS, "aud": AUD, "sub": "u", "iat": NOW, "exp": NOW + 60, "nonce": "n"},
        K1,
        algorithm="RS256",
        headers={"kid": "k1", param: "x"},
    )
    with pytest.raises(VerificationError) as e:
        await OidcVerifier([p], JwksCache()).verify(tok, now=NOW)
    assert e.value.reason == "malformed"
