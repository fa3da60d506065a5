"""Full zkLogin proofs (Sui circuit V1) against the production key: a real
Google proof from fastcrypto's tests verifies, every tampering fails, and the
parsers refuse garbage with ``malformed`` only."""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.groth16 import InvalidProof
from popgate.verifiers.zklogin import address_from_seed, compute_nonce, hash_ascii_str_to_field
from popgate.verifiers.zklogin_proof import (
    all_inputs_hash,
    decode_iss,
    header_kid,
    modulus_field,
    parse_inputs,
    parse_signature,
    verify_inputs,
)

FIX = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "zklogin" / "proof_vectors.json").read_text()
)
CASE = FIX["proofs"][0]
EXT = base64.b64decode(CASE["ext_eph_pk"])


def modulus(n: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(n + "=" * (-len(n) % 4)), "big")


MOD = modulus(CASE["jwk"]["n"])


def test_real_google_proof_verifies_with_the_production_key():
    inputs = parse_inputs(CASE["inputs"])
    assert (inputs.iss, inputs.kid) == (CASE["iss"], CASE["kid"])
    assert inputs.address_seed == int(CASE["address_seed"])
    verify_inputs(inputs, EXT, CASE["max_epoch"], MOD)
    # the address Sui (and fastcrypto's test) derive for this seed
    assert address_from_seed(inputs.address_seed, inputs.iss, padded=False) == CASE["address_unpadded"]
    assert address_from_seed(inputs.address_seed, inputs.iss, padded=True) == CASE["address_padded"]


def test_serialized_signature_from_the_sdk_carries_the_same_proof():
    parts = parse_signature(CASE["zklogin_signature"])
    assert parts.max_epoch == CASE["max_epoch"]
    assert parts.ephemeral_key.extended == EXT
    assert parts.inputs == parse_inputs(CASE["inputs"])
    verify_inputs(parts.inputs, parts.ephemeral_key.extended, parts.max_epoch, MOD)


def test_fastcrypto_hash_and_nonce_vectors():
    # fastcrypto zk_login_tests.rs: test_hash_ascii_str_to_field, test_get_nonce
    assert (
        hash_ascii_str_to_field("eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6IjEifQ", 248)
        == 10859137172532636243875876865378218840892896099608302223608404291948352005840
    )
    n = FIX["nonce"]
    assert (
        compute_nonce(base64.b64decode(n["ext_eph_pk"]), n["max_epoch"], int(n["randomness"]))
        == n["nonce"]
        == "hTPpgF7XAKbW37rEUS6pEVZqmoI"
    )


def tampered(**over: Any) -> dict[str, Any]:
    out = copy.deepcopy(CASE["inputs"])
    for k, v in over.items():
        out[k] = v
    return out


OTHER_N = FIX["real_jwts"][0]["n"]


@pytest.mark.parametrize(
    "what, inputs, ext, epoch, mod",
    [
        ("later max_epoch", CASE["inputs"], EXT, CASE["max_epoch"] + 1, MOD),
        ("other ephemeral key", CASE["inputs"], EXT[:-1] + bytes([EXT[-1] ^ 1]), CASE["max_epoch"], MOD),
        ("other provider key", CASE["inputs"], EXT, CASE["max_epoch"], modulus(OTHER_N)),
        (
            "other address seed",
            tampered(addressSeed=str(int(CASE["address_seed"]) + 1)),
            EXT,
            CASE["max_epoch"],
            MOD,
        ),
        (
            "other kid in the header",
            tampered(
                headerBase64=base64.urlsafe_b64encode(b'{"alg":"RS256","kid":"0000","typ":"JWT"}')
                .rstrip(b"=")
                .decode()
            ),
            EXT,
            CASE["max_epoch"],
            MOD,
        ),
        (
            "proof point c swapped for a",
            tampered(proofPoints={**CASE["inputs"]["proofPoints"], "c": CASE["inputs"]["proofPoints"]["a"]}),
            EXT,
            CASE["max_epoch"],
            MOD,
        ),
    ],
)
def test_every_tampering_fails(what, inputs, ext, epoch, mod):
    with pytest.raises(InvalidProof):
        verify_inputs(parse_inputs(inputs), ext, epoch, mod)


def test_point_off_the_curve_is_refused_before_pairing():
    pts = copy.deepcopy(CASE["inputs"]["proofPoints"])
    pts["a"][1] = str(int(pts["a"][1]) + 1)
    with pytest.raises(InvalidProof):
        verify_inputs(parse_inputs(tampered(proofPoints=pts)), EXT, CASE["max_epoch"], MOD)


def test_iss_decoding_follows_fastcrypto():
    # fastcrypto: test_decode_base64 / test_parse_jwt_details
    assert decode_iss("wiaXNzIjoiaHR0cHM6Ly9pZC50d2l0Y2gudHYvb2F1dGgyIiw", 2) == "https://id.twitch.tv/oauth2"
    assert decode_iss(CASE["inputs"]["issBase64Details"]["value"], 1) == "https://accounts.google.com"
    aud = "yJhdWQiOiJkMzFpY3FsNmw4eHpwYTdlZjMxenR4eXNzNDZvY2siLC"
    for index in (0, 2, 3):  # last char inside a byte / not UTF-8 / bad offset
        with pytest.raises(Malformed):
            decode_iss(aud, index)
    with pytest.raises(Malformed, match="iss"):
        decode_iss(aud, 1)  # a valid claim, but "aud"


def test_header_must_be_rs256_with_a_kid():
    b64 = lambda d: base64.urlsafe_b64encode(json.dumps(d).encode()).rstrip(b"=").decode()  # noqa: E731
    assert header_kid(b64({"alg": "RS256", "kid": "k"})) == "k"
    with pytest.raises(VerificationError) as e:
        header_kid(b64({"alg": "HS256", "kid": "k"}))
    assert e.value.reason == "wrong_alg"
    for bad in (b64({"alg": "RS256"}), b64([1]), "!!", "e3"):
        with pytest.raises(Malformed):
            header_kid(bad)


def test_modulus_and_epoch_ranges():
    with pytest.raises(Malformed):
        modulus_field(1 << 2048)
    with pytest.raises(Malformed):
        all_inputs_hash(parse_inputs(CASE["inputs"]), EXT, 2**64, MOD)


def test_signature_framing_errors_are_malformed():
    raw = base64.b64decode(CASE["zklogin_signature"])
    for bad in (raw[:-1], raw + b"\0", b"\x00" + raw[1:], raw[:40], b""):
        with pytest.raises(Malformed):
            parse_signature(base64.b64encode(bad).decode())
    with pytest.raises(Malformed):
        parse_signature("not base64!")


@given(st.binary(max_size=600))
def test_signature_parser_only_raises_malformed(data):
    try:
        parse_signature(base64.b64encode(b"\x05" + data).decode())
    except VerificationError:
        pass


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=40),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=12), c, max_size=4),
        max_leaves=20,
    )
)
def test_inputs_parser_only_raises_verification_errors(obj):
    try:
        parse_inputs(obj)
    except VerificationError:
        pass


@given(st.text(max_size=80), st.integers(-2, 5))
def test_iss_decoder_only_raises_malformed(value, index):
    try:
        decode_iss(value, index)
    except Malformed:
        pass


def test_submission_forms():
    from popgate.verifiers.zklogin_proof import parse_submission

    raw = {"inputs": CASE["inputs"], "ext_eph_pk": CASE["ext_eph_pk"], "max_epoch": "10"}
    sub = parse_submission(raw)
    assert (sub.max_epoch, sub.ephemeral_key.extended, sub.user_signature) == (10, EXT, b"")
    assert parse_submission({"zklogin_signature": CASE["zklogin_signature"]}).inputs == sub.inputs
    unknown_flag = base64.b64encode(b"\x07" + EXT[1:]).decode()
    for bad in (
        {**raw, "max_epoch": "-1"},
        {**raw, "max_epoch": str(2**64)},
        {**raw, "max_epoch": True},
        {**raw, "ext_eph_pk": "!!"},
        {**raw, "ext_eph_pk": unknown_flag},
        {k: v for k, v in raw.items() if k != "ext_eph_pk"},
        [raw],
    ):
        with pytest.raises(Malformed):
            parse_submission(bad)
