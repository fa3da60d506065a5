"""World ID 4.0, verified locally: the protocol's own test proof (production key)
and every single-field negative, parsing, and chain facts given as data."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popgate.verifiers import worldid_v4 as v4
from popgate.verifiers.bn254.encoding import parse_uint
from popgate.verifiers.errors import Malformed, VerificationError

FIX = json.loads(
    (
        Path(__file__).resolve().parent.parent / "fixtures" / "groth16" / "worldid_v4_verifier_test.json"
    ).read_text()
)
CHECK = v4.LocalProofCheck()


def expect(**over: Any) -> v4.Expect:
    base: dict[str, Any] = {
        "rp_id": v4.parse_rp_id(FIX["rp_id"]),
        "action": "",
        "action_hash": parse_uint(FIX["action_hash"]),
        "nonce": parse_uint(FIX["nonce"]),
        "signal": FIX["signal"],
        "now": FIX["now"],
    }
    base.update(over)
    return v4.Expect(**base)


def chain(**over: Any) -> v4.StaticChain:
    data = copy.deepcopy(FIX["chain"])
    data.update(over)
    return v4.chain_from_json(data)


async def run(item: Any = None, e: v4.Expect | None = None, c: v4.StaticChain | None = None) -> v4.VerifiedV4:
    return await v4.check(
        FIX["item"] if item is None else item, e or expect(), c or chain(), CHECK, scope="s"
    )


async def test_protocol_test_proof_verifies_under_the_production_key() -> None:
    out = await run()
    assert out.nullifier == FIX["item"]["nullifier"]
    assert out.issuer_schema_id == 1 and out.identifier == "proof_of_human"
    assert (out.spend.kind, out.spend.ident) == ("worldid-nullifier", f"s:v4:{FIX['item']['nullifier']}")


def test_signal_hash_is_the_fixtures() -> None:
    """b"my_signal" hashes to the test's signalHash; no signal is 0 (world-id-primitives)."""
    assert v4.signal_hash_v4("my_signal") == 0x1578ED0DE47522AD0B38E87031739C6A65CAECC39CE3410BF3799E756A220F
    assert v4.signal_hash_v4(None) == 0


def test_public_input_order_is_the_contracts() -> None:
    it = v4.parse_item(FIX["item"])
    e = expect()
    pub = v4.public_inputs(it, e, (11, 12), (21, 22), 30)
    assert pub == [
        it.nullifier, 1, 11, 12, it.expires_at_min, 0, it.root, 30,
        e.rp_id, e.action_hash, 21, 22, v4.signal_hash_v4("my_signal"), e.nonce, 0,
    ]  # fmt: skip


WRONG = FIX["wrong"]


@pytest.mark.parametrize(
    ("name", "e_over", "c_over", "reason"),
    [
        ("nonce", {"nonce": parse_uint(FIX["nonce"]) + 1}, {}, "invalid_proof"),
        ("action", {"action": "another", "action_hash": None}, {}, "invalid_proof"),
        ("signal", {"signal": "another"}, {}, "invalid_proof"),
        ("no signal", {"signal": None}, {}, "invalid_proof"),
        (
            "rp id",
            {"rp_id": 2},
            {"oprf_keys": {"2": FIX["chain"]["oprf_keys"][FIX["rp_id"]]}},
            "invalid_proof",
        ),
        ("issuer key", {}, {"issuer_keys": {"1": WRONG["issuer_key"]}}, "invalid_proof"),
        ("oprf key", {}, {"oprf_keys": {FIX["rp_id"]: WRONG["oprf_key"]}}, "invalid_proof"),
        ("expired", {"now": FIX["item"]["expires_at_min"] + 18001}, {}, "credential_expired"),
        ("root not valid", {}, {"valid_roots": ["0x2"]}, "unknown_root"),
        ("wrong depth", {}, {"tree_depth": 31}, "invalid_proof"),
        ("issuer unknown", {}, {"issuer_keys": {}}, "unknown_issuer"),
        ("rp unknown", {}, {"oprf_keys": {}}, "unknown_rp"),
        ("schema not allowed", {"schemas": (9303,)}, {}, "verification_level"),
    ],
)
async def test_single_field_negatives(name: str, e_over: dict, c_over: dict, reason: str) -> None:
    with pytest.raises(VerificationError) as err:
        await run(e=expect(**e_over), c=chain(**c_over))
    assert err.value.reason == reason, name


async def test_expiry_threshold_edge() -> None:
    exp = FIX["item"]["expires_at_min"]
    await run(e=expect(now=exp + 18000))  # exactly at the threshold: still accepted (contract: <)


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("nullifier", "0x1234", "invalid_proof"),
        ("issuer_schema_id", 9303, "unknown_issuer"),
        ("expires_at_min", FIX["item"]["expires_at_min"] + 1, "invalid_proof"),
        ("signal_hash", "0x1234", "invalid_proof"),
    ],
)
async def test_client_fields_are_bound(field: str, value: Any, reason: str) -> None:
    item = copy.deepcopy(FIX["item"])
    item[field] = value
    with pytest.raises(VerificationError) as err:
        await run(item=item)
    assert err.value.reason == reason


async def test_tampered_proof_word() -> None:
    item = copy.deepcopy(FIX["item"])
    item["proof"][3] = item["proof"][0]  # the contract test's "broken proof"
    with pytest.raises(VerificationError) as err:
        await run(item=item)
    assert err.value.reason == "invalid_proof"


@pytest.mark.parametrize(
    "item",
    [
        "x", 5, [], {}, {"proof": [1, 2, 3]},
        {**FIX["item"], "proof": "0x00"},
        {**FIX["item"], "nullifier": None},
        {**FIX["item"], "issuer_schema_id": 2**64},
        {**FIX["item"], "issuer_schema_id": True},
        {**FIX["item"], "expires_at_min": -1},
        {**FIX["item"], "identifier": 3},
        {**FIX["item"], "session_nullifier": ["0x1", "0x2"]},
        {k: v for k, v in FIX["item"].items() if k != "nullifier"},
    ],
)  # fmt: skip
async def test_malformed_items(item: Any) -> None:
    with pytest.raises(Malformed):
        await run(item=item)


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda c: st.lists(c, max_size=6) | st.dictionaries(st.text(max_size=20), c, max_size=6),
    )
)
def test_parse_item_never_crashes(obj: Any) -> None:
    try:
        v4.parse_item(obj)
    except Malformed:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["valid_roots", "issuer_keys", "oprf_keys", "tree_depth", "x"]),
        st.none()
        | st.integers()
        | st.text(max_size=10)
        | st.lists(st.text(max_size=10), max_size=3)
        | st.dictionaries(st.text(max_size=20), st.lists(st.text(max_size=8), max_size=3), max_size=3),
    )
)
def test_chain_from_json_never_crashes(obj: Any) -> None:
    try:
        v4.chain_from_json(obj)
    except Malformed:
        pass


@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_rp_id_round_trip(n: int) -> None:
    assert v4.parse_rp_id(v4.format_rp_id(n)) == n


@pytest.mark.parametrize("bad", ["rp_123", "rp_zzzzzzzzzzzzzzzz", str(2**64), True, None])
def test_rp_id_rejects(bad: Any) -> None:
    with pytest.raises(Malformed):
        v4.parse_rp_id(bad)
