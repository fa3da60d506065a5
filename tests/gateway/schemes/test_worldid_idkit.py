"""verify_idkit, the one World ID check the exchange endpoint (and, next, the page and the dApp
API) calls: called directly with in-process facts (chain as data, Groth16 in this process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from popgate.gateway.schemes.worldid4_config import RpSettings
from popgate.gateway.schemes.worldid_idkit import Expectations, Verifiers, verify_idkit
from popgate.gateway.schemes.worldid_roots import StaticRoots
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.groth16 import prepared_key
from popgate.verifiers.worldid_rp import nonce_key
from popgate.verifiers.worldid_v4 import LocalProofCheck, chain_from_json, key_json, parse_rp_id

FIX = json.loads((Path(__file__).resolve().parents[2] / "fixtures/groth16/worldid_v4_local.json").read_text())
REAL = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures/groth16/worldid_v4_verifier_test.json").read_text()
)


def verifiers(rp_key: bytes, rp_id: int, chain: dict, vk: object, nonces: str = "signed") -> Verifiers:
    rp = RpSettings(rp_id, {"k": rp_key}, "k", 300, "production", {"k": nonce_key(rp_key)})
    check = LocalProofCheck(prepared_key(vk))
    return Verifiers(StaticRoots(frozenset()), check, check, chain_from_json(chain), rp, nonces=nonces)


async def test_signed_nonces_and_one_outcome() -> None:
    c = FIX["cases"][0]
    v = verifiers(bytes.fromhex(FIX["rp_key"]), parse_rp_id(FIX["rp_id"]), FIX["chain"], FIX["vk"])
    e = Expectations(app_id="app_x", action=FIX["action"], signal=None, now=FIX["created_at"] + 5)
    out = await verify_idkit({"protocol_version": "4.0", "nonce": c["nonce"], "responses": [c["item"]]}, e, v)
    assert out.versions == ("4.0",) and out.nullifier == "v4:" + c["item"]["nullifier"]
    assert [s.kind for s in out.spends] == ["worldid-nonce", "worldid-nullifier"]


async def test_any_nonce_for_rp_contexts_signed_elsewhere() -> None:
    """A proof whose rp_context another key signed: refused as "signed", verified as "any"."""
    c = FIX["cases"][2]
    result = {"protocol_version": "4.0", "nonce": c["nonce"], "responses": [c["item"]]}
    args = (bytes.fromhex("22" * 32), parse_rp_id(FIX["rp_id"]), FIX["chain"], FIX["vk"])
    e = Expectations(app_id="app_x", action=FIX["action"], signal=None, now=FIX["created_at"] + 5)
    with pytest.raises(VerificationError) as err:
        await verify_idkit(result, e, verifiers(*args))
    assert err.value.reason == "invalid_nonce"
    out = await verify_idkit(result, e, verifiers(*args, nonces="any"))
    assert out.spends[0].kind == "worldid-nonce"  # still spent once


async def test_real_proof_with_a_foreign_nonce() -> None:
    """The real 4.0 test proof: its nonce was signed by the protocol's test RP, not by popgate.
    "signed" refuses it; "any" (a dApp's own rp_context) verifies it, and still spends it."""
    result = {"protocol_version": "4.0", "nonce": REAL["nonce"], "responses": [REAL["item"]]}
    args = (bytes.fromhex("11" * 32), parse_rp_id(REAL["rp_id"]), REAL["chain"], key_json())
    e = Expectations(app_id="app_x", action="", signal=REAL["signal"], now=REAL["now"])
    with pytest.raises(VerificationError) as err:
        await verify_idkit(result, e, verifiers(*args))
    assert err.value.reason == "invalid_nonce"
    # the fixture's action is only known as a field element: the check runs to the pairing
    with pytest.raises(VerificationError) as err:
        await verify_idkit(result, e, verifiers(*args, nonces="any"))
    assert err.value.reason == "invalid_proof"
