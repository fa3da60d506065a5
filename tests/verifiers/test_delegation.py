"""Delegation requests and key bindings (pure): bounds against the delegating session, and
parser properties."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.agent import public_jwk
from popgate.verifiers.delegation import binding_key, key_binding, parse_request
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.session import Session

NOW = 1_800_000_000
HUMAN = Session("human", "worldid:x", NOW - 10, NOW + 600, scope="/api")
ED = public_jwk(ed25519.Ed25519PrivateKey.generate())
P256 = public_jwk(ec.generate_private_key(ec.SECP256R1()))


@pytest.mark.parametrize("jwk", [ED, P256])
def test_binding_round_trip(jwk: dict[str, str]) -> None:
    """An Ed25519 or P-256 JWK becomes a `deleg:` binding whose key verifies what the JWK's does."""
    vk = binding_key(key_binding(jwk))
    assert vk.alg == ("ed25519" if jwk["kty"] == "OKP" else "ecdsa-p256-sha256")


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ({"jwk": ED, "ttl": 601}, "exceeds_session"),
        ({"jwk": ED, "expires": NOW + 601}, "exceeds_session"),
        ({"jwk": ED, "scope": "/"}, "exceeds_session"),
        ({"jwk": ED, "scope": "/apix"}, "exceeds_session"),
        ({"jwk": ED, "ttl": 0}, "expired"),
        ({"jwk": ED, "ttl": 10, "expires": NOW + 10}, "malformed"),
        ({"jwk": ED, "scope": "/api/../admin"}, "malformed"),
        ({"jwk": ED, "quota": 0}, "malformed"),
        ({"jwk": {**ED, "d": "x"}}, "malformed"),
        ({"jwk": {"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"}}, "malformed"),
        ({"jwk": ED, "routes": ["a b"]}, "malformed"),
    ],
)
def test_requests_beyond_the_session_or_malformed(body: dict[str, Any], reason: str) -> None:
    with pytest.raises(VerificationError) as e:
        parse_request(body, HUMAN, NOW, 86400)
    assert e.value.reason == reason


def test_defaults_follow_the_session() -> None:
    """No ttl: as long as the session lasts (and max_ttl allows); no scope: the session's."""
    r = parse_request({"jwk": ED}, HUMAN, NOW, 86400)
    assert (r.expires, r.scope, r.quota, r.routes) == (NOW + 600, "/api", None, None)
    assert parse_request({"jwk": ED}, HUMAN, NOW, 60).expires == NOW + 60
    assert parse_request({"jwk": ED, "scope": "/api/v1", "routes": ["r1"]}, HUMAN, NOW, 86400).routes == (
        "r1",
    )


@given(
    st.dictionaries(
        st.sampled_from(["jwk", "scope", "ttl", "expires", "quota", "routes"]),
        st.from_type(object) | st.text() | st.integers(),
    )
)
def test_parse_request_never_crashes(data: dict[str, Any]) -> None:
    """Any JSON-ish request: a DelegationRequest or a VerificationError, nothing else."""
    try:
        parse_request(data, HUMAN, NOW, 86400)
    except VerificationError:
        pass


@given(st.text(max_size=120))
def test_binding_key_never_crashes(text: str) -> None:
    for b in (text, "deleg:" + text):
        try:
            binding_key(b)
        except Malformed:
            pass
