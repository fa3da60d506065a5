"""One place that drives every parser of client bytes with arbitrary input,
asserting only the documented exception types (``HYPOTHESIS_PROFILE=deep``
for a long run). The scheme-specific property tests live beside each
verifier; this file is the inventory:

=================================  ===========================================
parser                             scheme-specific property tests
=================================  ===========================================
verifiers.session.SessionCodec     tests/gateway/schemes/test_session.py
verifiers.worldid.parse_result     tests/verifiers/test_worldid.py
verifiers.worldid_v4.parse_item    tests/verifiers/test_worldid_v4.py
verifiers.worldid_rp.parse_nonce   tests/verifiers/test_worldid_rp.py
verifiers.groth16.parse_proof/...  tests/verifiers/test_groth16_parsers.py
verifiers.oidc.parse_header        tests/verifiers/test_oidc.py
verifiers.zklogin.parse_ext_eph_pk tests/verifiers/test_zklogin.py
verifiers.structured_fields.*      tests/verifiers/test_httpsig_structured_fields.py
verifiers.httpsig.parse_signatures tests/verifiers/test_httpsig.py
verifiers.webbotauth.parse_sig...  tests/verifiers/test_webbotauth.py
verifiers.hashcash.parse           tests/verifiers/test_hashcash.py
verifiers.puzzle.parse_solution    tests/verifiers/test_puzzle_props.py
verifiers.x402.*                   tests/verifiers/test_x402_wire.py
verifiers.x402_exact.parse_auth..  tests/verifiers/test_x402_exact.py
verifiers.paypercrawl.parse_price  tests/verifiers/test_paypercrawl.py
verifiers.jwks.parse_jwks          (here only)
policies.loader.loads              tests/policies/test_loader.py
policies.hostnorm.normalize_host   tests/policies/test_hostnorm.py
gateway.http.target.request_target tests/gateway/http/test_target_parse.py (+ live: test_target_sweep.py)
gateway.ops.config.build_config        (here only)
=================================  ===========================================
"""

from __future__ import annotations

import string
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from popgate.verifiers.errors import VerificationError

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=25,
)
HEADERISH = st.text(alphabet=string.printable, max_size=300) | st.text(max_size=120)
B64ISH = st.text(alphabet=string.ascii_letters + string.digits + "-_=.+/:;, ", max_size=300)
TEXT = HEADERISH | B64ISH


def _only(exc_types: tuple[type[BaseException], ...], fn: Any, *args: Any, **kw: Any) -> None:
    try:
        fn(*args, **kw)
    except exc_types:
        pass


@given(TEXT)
def test_session_tokens(token):
    """SessionCodec.verify: InvalidSession (a VerificationError) for anything bad."""
    from popgate.verifiers.session import SessionCodec

    codec = SessionCodec({"k1": b"k" * 32}, "k1")
    _only((VerificationError,), codec.verify, token, 1_800_000_000.0)
    _only((VerificationError,), codec.verify, "v1.k1." + token, 1_800_000_000.0)


@given(
    JSON
    | st.fixed_dictionaries(
        {
            "proof": JSON | TEXT,
            "merkle_root": JSON | TEXT,
            "nullifier_hash": JSON | TEXT,
            "verification_level": st.sampled_from(["orb", "device", "x"]),
        }
    )
)
def test_worldid_results(obj):
    from popgate.verifiers.worldid import parse_result

    _only((VerificationError,), parse_result, obj)


@given(JSON | st.fixed_dictionaries({"responses": st.lists(JSON, max_size=3), "nonce": JSON | TEXT}))
def test_worldid4_results(obj):
    from popgate.gateway.schemes.worldid_idkit import split_items
    from popgate.verifiers.worldid_rp import parse_nonce
    from popgate.verifiers.worldid_v4 import chain_from_json, parse_item, parse_rp_id

    for fn in (parse_item, parse_rp_id, parse_nonce, chain_from_json, split_items):
        _only((VerificationError,), fn, obj)


@given(
    st.dictionaries(
        st.sampled_from(["rp", "chain", "legacy", "issuer_schema_ids", "app_id"]), JSON, max_size=5
    )
)
def test_worldid4_config(table):
    from popgate.gateway.ops.config import ConfigError
    from popgate.gateway.schemes.worldid_config import parse_settings

    _only((ConfigError,), parse_settings, table, "memory://", {})


@given(JSON)
def test_groth16_proofs_and_publics(obj):
    from popgate.verifiers.groth16 import parse_proof, parse_public

    _only((VerificationError,), parse_proof, obj)
    _only((VerificationError,), parse_public, obj)


@given(TEXT | st.builds(lambda a, b, c: f"{a}.{b}.{c}", B64ISH, B64ISH, B64ISH))
def test_jwts(token):
    from popgate.verifiers.oidc import parse_header

    _only((VerificationError,), parse_header, token)


@given(st.binary(max_size=80))
def test_zklogin_ephemeral_keys(data):
    from popgate.verifiers.zklogin import parse_ext_eph_pk

    _only((VerificationError,), parse_ext_eph_pk, data)


@given(st.binary(max_size=400) | st.builds(lambda b: b"\x05" + b, st.binary(max_size=400)), JSON)
def test_zklogin_proofs(data, obj):
    """Serialized zkLogin signatures (BCS) and the prover's JSON."""
    import base64

    from popgate.verifiers.zklogin_proof import parse_inputs, parse_signature

    _only((VerificationError,), parse_signature, base64.b64encode(data).decode())
    _only((VerificationError,), parse_inputs, obj)


@given(JSON)
def test_jwks_documents(obj):
    from popgate.verifiers.jwks import parse_jwks

    _only((VerificationError,), parse_jwks, obj)


@given(TEXT)
def test_structured_fields(value):
    from popgate.verifiers.structured_fields import parse_dictionary, parse_item, parse_list

    for fn in (parse_item, parse_list, parse_dictionary):
        _only((VerificationError,), fn, value)


@given(
    st.dictionaries(
        st.sampled_from(["signature-input", "signature", "signature-agent", "content-digest"]),
        TEXT,
        max_size=4,
    )
)
def test_rfc9421_headers(headers):
    from popgate.verifiers.httpsig import parse_signatures
    from popgate.verifiers.webbotauth import parse_signature_agent

    _only((VerificationError,), parse_signatures, headers)
    if "signature-agent" in headers:
        _only((VerificationError,), parse_signature_agent, headers["signature-agent"])


@given(TEXT | st.builds(":".join, st.lists(TEXT, min_size=7, max_size=7)))
def test_hashcash_stamps(text):
    from popgate.verifiers.hashcash import parse

    _only((VerificationError,), parse, text)


@given(TEXT)
def test_puzzle_solutions_and_challenges(text):
    from popgate.verifiers.puzzle import PuzzleKeys, decode, parse_solution

    _only((VerificationError,), parse_solution, text)
    _only((VerificationError,), decode, PuzzleKeys({"p1": b"p" * 32}, "p1"), text)


@given(TEXT, st.booleans())
def test_x402_headers(value, v1):
    from popgate.verifiers.x402 import decode_header, extract, parse_payment_signature, parse_x_payment

    _only((VerificationError,), decode_header, value)
    _only((VerificationError,), parse_payment_signature, value)
    _only((VerificationError,), parse_x_payment, value)
    _only((VerificationError,), extract, {"PAYMENT-SIGNATURE": value, "X-PAYMENT": value}, accept_v1=v1)


@given(st.dictionaries(st.text(max_size=12), JSON | TEXT, max_size=8))
def test_x402_exact_authorizations(payload):
    from popgate.verifiers.x402_exact import parse_authorization

    _only((VerificationError,), parse_authorization, payload)


@given(TEXT)
def test_crawler_prices(value):
    from popgate.verifiers.paypercrawl import parse_price

    _only((VerificationError,), parse_price, value)


TOML_KEYS = st.sampled_from(
    [
        "default",
        "rules",
        "thresholds",
        "all",
        "human",
        "unknown",
        "name",
        "path",
        "action",
        "kind",
        "price",
        "ways",
        "methods",
        "networks",
        "path_regex",
        "headers",
        "weight",
        "include",
        "version",
        "min_bits",
    ]
)
TOML_VALUES = st.recursive(
    st.booleans()
    | st.integers(-5, 10**6)
    | st.sampled_from(
        ["allow", "deny", "challenge", "charge", "/a/**", "(", "[", "10.0.0.0/8", "0.001", "x"]
    ),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TOML_KEYS, inner, max_size=4),
    max_leaves=20,
)


RULE = st.dictionaries(TOML_KEYS, TOML_VALUES, max_size=5)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "default": RULE | TOML_VALUES,
            "rules": st.lists(RULE, max_size=4) | TOML_VALUES,
            "thresholds": st.lists(RULE, max_size=2) | TOML_VALUES,
            "version": TOML_VALUES,
        },
    ),
    st.text(max_size=200),
)
def test_policy_files(doc, text):
    """popgate.policies.loader: PolicyError (every problem listed) for any bad table or text."""
    from popgate.policies.loader import PolicyError, compile_policy, loads

    _only((PolicyError,), compile_policy, doc)
    _only((PolicyError,), loads, text)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "server",
                "limits",
                "sessions",
                "store",
                "policy",
                "puzzle",
                "x",
                "credits",
                "x402",
                "zklogin",
                "worldid",
            ]
        ),
        st.dictionaries(st.text(max_size=20), JSON, max_size=5) | JSON,
        max_size=5,
    )
)
def test_config_dicts(data):
    """popgate.gateway.ops.config.build_config: ConfigError (never anything else) for any parsed TOML."""
    from popgate.gateway.ops.config import ConfigError, build_config

    _only((ConfigError,), build_config, data, [], {})
