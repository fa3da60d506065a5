"""Privacy Pass token verification against published vectors, and parser properties.

Vectors (tests/fixtures/privatepass/, copied unchanged from cloudflare/privacypass-ts
test/test_data at commit 5f3602c79255402e8ecc894bcb95375ad1a8c030):
- pub_verif_rfc9578.{go,rust}.json: RFC 9578 Appendix A.2 (issuance protocol 2, blind RSA),
  made by the Go and Rust implementations;
- auth_scheme_token_v14.json, auth_scheme_header_v14.json: RFC 9577 Appendix A
  (token authenticator input, WWW-Authenticate challenges).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.privatepass import (
    TOKEN_LEN,
    InvalidToken,
    Token,
    TokenChallenge,
    b64u,
    b64u_decode,
    load_token_key,
    parse_auth_params,
    parse_challenge,
    parse_token,
    token_from_authorization,
    verify_token,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "privatepass"


def vectors(name: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = json.loads((FIXTURES / name).read_text())
    return data


ISSUANCE = [
    pytest.param(v, id=f"{f.split('.')[1]}-{i}")
    for f in ("pub_verif_rfc9578.go.json", "pub_verif_rfc9578.rust.json")
    for i, v in enumerate(vectors(f))
]


@pytest.mark.parametrize("v", ISSUANCE)
def test_rfc9578_vectors_verify(v: dict[str, Any]) -> None:
    """Each RFC 9578 A.2 token verifies under pkS for its challenge, and its nonce is what is spent."""
    key = load_token_key(bytes.fromhex(v["pkS"]))
    challenge = parse_challenge(bytes.fromhex(v["token_challenge"]))
    assert challenge.encode().hex() == v["token_challenge"]
    token = parse_token(bytes.fromhex(v["token"]))
    assert token.nonce.hex() == v["nonce"]
    assert token.token_key_id == hashlib.sha256(bytes.fromhex(v["pkS"])).digest() == key.key_id
    item = verify_token(token, {key.key_id: key}, {challenge.digest()}, spend_ttl=60)
    assert item.kind == "privatepass" and item.limit == 1


@pytest.mark.parametrize("v", ISSUANCE[:3])
def test_rfc9578_vectors_refused_when_altered(v: dict[str, Any]) -> None:
    """A flipped authenticator bit, another challenge, or an unknown key: each refused with its reason."""
    key = load_token_key(bytes.fromhex(v["pkS"]))
    challenge = parse_challenge(bytes.fromhex(v["token_challenge"]))
    raw = bytearray(bytes.fromhex(v["token"]))
    raw[-1] ^= 1
    with pytest.raises(InvalidToken):
        verify_token(parse_token(bytes(raw)), {key.key_id: key}, {challenge.digest()}, spend_ttl=60)
    token = parse_token(bytes.fromhex(v["token"]))
    other = TokenChallenge(challenge.issuer_name, challenge.redemption_context, "elsewhere.example")
    with pytest.raises(VerificationError) as e:
        verify_token(token, {key.key_id: key}, {other.digest()}, spend_ttl=60)
    assert e.value.reason == "wrong_challenge"
    with pytest.raises(VerificationError) as e:
        verify_token(token, {}, {challenge.digest()}, spend_ttl=60)
    assert e.value.reason == "unknown_key"


@pytest.mark.parametrize("v", vectors("auth_scheme_token_v14.json"))
def test_rfc9577_token_input_vectors(v: dict[str, Any]) -> None:
    """Challenge encoding, digest and token_input match RFC 9577's authenticator inputs."""
    challenge = TokenChallenge(
        bytes.fromhex(v["issuer_name"]).decode(),
        bytes.fromhex(v["redemption_context"]),
        bytes.fromhex(v["origin_info"]).decode(),
    )
    token = Token(bytes.fromhex(v["nonce"]), challenge.digest(), bytes.fromhex(v["token_key_id"]), b"")
    assert token.token_input.hex() == v["token_authenticator_input"]


def test_rfc9577_header_vector() -> None:
    """The RFC's WWW-Authenticate parses to its challenge and key (unknown attributes ignored)."""
    v = vectors("auth_scheme_header_v14.json")[0]
    params = parse_auth_params(v["WWW-Authenticate"])
    assert b64u_decode(params["challenge"]).hex() == v["token-challenge-0"]
    assert b64u_decode(params["token-key"]).hex() == v["token-key-0"]
    assert params["max-age"] == "10" and params["unknownchallengeattribute"] == "ignore-me"
    assert parse_challenge(bytes.fromhex(v["token-challenge-0"])).issuer_name == "issuer.example"
    load_token_key(bytes.fromhex(v["token-key-0"]))


def test_authorization_header_round_trip() -> None:
    """``PrivateToken token=…`` quoted or not, padded or not, carries the token."""
    v = vectors("pub_verif_rfc9578.go.json")[0]
    raw = bytes.fromhex(v["token"])
    for form in (b64u(raw), b64u(raw).rstrip("="), f'"{b64u(raw)}"'):
        assert token_from_authorization(f"PrivateToken token={form}").nonce.hex() == v["nonce"]
    with pytest.raises(Malformed):
        token_from_authorization("Bearer abc")
    with pytest.raises(Malformed):
        token_from_authorization("PrivateToken challenge=abc")


def test_other_token_types_and_keys_refused() -> None:
    """A type-1 (VOPRF) token is `unsupported_token_type`; a P-256 or short RSA key is no issuer key."""
    with pytest.raises(VerificationError) as e:
        parse_token(b"\x00\x01" + bytes(96 + 48))
    assert e.value.reason == "unsupported_token_type"
    v = vectors("auth_scheme_header_v14.json")[1]
    with pytest.raises(Malformed):
        load_token_key(bytes.fromhex(v["token-key-1"]))


@given(st.binary(max_size=400))
def test_parsers_never_crash(raw: bytes) -> None:
    """Any bytes: each parser returns or raises VerificationError, nothing else."""
    for parse in (parse_challenge, parse_token, load_token_key):
        try:
            parse(raw)
        except VerificationError:
            pass


@given(st.text(max_size=300))
def test_header_parser_never_crashes(text: str) -> None:
    for header in (text, "PrivateToken " + text, "PrivateToken token=" + text):
        try:
            token_from_authorization(header)
        except VerificationError:
            pass


@given(
    st.text(min_size=1, max_size=40),
    st.sampled_from([b"", bytes(range(32))]),
    st.text(max_size=40),
)
def test_challenge_round_trip(issuer: str, context: bytes, origin: str) -> None:
    """encode ∘ parse is the identity on valid challenges."""
    c = TokenChallenge(issuer, context, origin)
    assert parse_challenge(c.encode()) == c


@given(st.binary(min_size=TOKEN_LEN - 2, max_size=TOKEN_LEN - 2))
def test_token_round_trip(body: bytes) -> None:
    t = parse_token(b"\x00\x02" + body)
    assert t.token_input + t.authenticator == b"\x00\x02" + body
