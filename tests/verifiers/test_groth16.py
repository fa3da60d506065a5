"""Groth16 verification on real proofs (snarkjs, @semaphore-protocol/proof,
semaphore-rs via world-id-contracts, a compressed World ID 4.0 test proof),
fast and reference implementations through the same tests, and every
validation's negative case."""

from __future__ import annotations

import copy
import json
import pickle
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from popgate.verifiers import worldid
from popgate.verifiers.bn254 import curve as c
from popgate.verifiers.bn254.fields import P, R
from popgate.verifiers.bn254.reference import verify_reference
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.groth16 import (
    InvalidKey,
    InvalidProof,
    Proof,
    parse_proof,
    parse_public,
    parse_vk,
    prepare_key,
    prepared_key,
    raise_job_result,
    verify,
    verify_job,
)
from tests.verifiers.test_bn254 import twist_point_off_subgroup

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "groth16"


def load(name: str) -> Any:
    return json.loads((FIX / name).read_text())


def packed_of(p: Proof) -> list[str]:
    (ax, ay), ((bx0, bx1), (by0, by1)), (cx, cy) = p.a, p.b, p.c
    return [str(v) for v in (ax, ay, bx1, bx0, by1, by0, cx, cy)]


def compressed_of(p: Proof) -> list[str]:
    b0, b1 = c.g2_compress(p.b)
    return [hex(c.g1_compress(p.a)), hex(b1), hex(b0), hex(c.g1_compress(p.c))]


def snarkjs_of(p: Proof) -> dict[str, Any]:
    (ax, ay), ((bx0, bx1), (by0, by1)), (cx, cy) = p.a, p.b, p.c
    return {
        "pi_a": [str(ax), str(ay), "1"],
        "pi_b": [[str(bx0), str(bx1)], [str(by0), str(by1)], ["1", "0"]],
        "pi_c": [str(cx), str(cy), "1"],
        "protocol": "groth16",
        "curve": "bn128",
    }


def _cases() -> dict[str, tuple[Any, Any, list[str]]]:
    """id -> (vk json, proof in its published encoding, public inputs)."""
    out: dict[str, tuple[Any, Any, list[str]]] = {}
    for n in (1, 2, 15):
        d = load(f"pub{n}.json")
        out[f"snarkjs-pub{n}"] = (d["vk"], d["proof"], d["public"])
    local = load("semaphore_v3_local_depth20.vk.json")
    for i, case in enumerate(load("semaphore_v3_js.json")["cases"]):
        out[f"semaphore-js-v3-{i}"] = (local, {"packed": case["packed"]}, case["public"])
    for i, case in enumerate(load("worldid_v3_local.json")["cases"]):
        out[f"idkit-abi-hex-{i}"] = (local, case["idkit2_result"]["proof"], case["public"])
    v4 = load("semaphore_v4_pse.json")
    for i, case in enumerate(v4["cases"]):
        out[f"semaphore-v4-pse-{i}"] = (
            worldid.key("semaphore_v4", v4["depth"]),
            case["packed"],
            case["public"],
        )
    wc = load("worldid_contracts_inclusion_depth16.json")
    out["world-id-contracts-pse16"] = (
        worldid.key("semaphore_v3", 16),
        {"packed": wc["packed"]},
        [wc["root"], wc["nullifier_hash"], wc["signal_hash"], wc["external_nullifier_hash"]],
    )
    wp = load("worldid_protocol_nullifier_compressed.json")
    out["world-id-protocol-compressed-15"] = (wp["vk"], {"compressed": wp["compressed"]}, wp["public"])
    return out


CASES = _cases()
SEMAPHORE = "semaphore-js-v3-0"
# The naive py_ecc verifier takes seconds: it sees a small subset.
REFERENCE_SUBSET = [SEMAPHORE, "snarkjs-pub1"]

Check = Callable[[Any, Any, Any], None]


def fast(vk: Any, proof: Any, public: Any) -> None:
    key = prepared_key(vk)
    verify(key, parse_proof(proof), parse_public(public, key.n_public))


def reference(vk: Any, proof: Any, public: Any) -> None:
    verify_reference(parse_vk(vk), parse_proof(proof), parse_public(public))


IMPLS: dict[str, Check] = {"fast": fast, "reference": reference}


def impl_cases(subset: list[str]) -> list[Any]:
    return [
        pytest.param(impl, cid, id=f"{impl}-{cid}")
        for impl in IMPLS
        for cid in (CASES if impl == "fast" else subset)
    ]


@pytest.mark.parametrize(("impl", "cid"), impl_cases(REFERENCE_SUBSET))
def test_real_proofs_verify(impl: str, cid: str) -> None:
    """Every published proof verifies under its key (returns None, raises nothing)."""
    vk, proof, public = CASES[cid]
    assert IMPLS[impl](vk, proof, public) is None


@pytest.mark.parametrize("cid", list(CASES))
def test_all_encodings_of_a_proof_verify(cid: str) -> None:
    """snarkjs JSON, EIP-197 packed, compressed and ABI hex give one proof."""
    vk, proof, public = CASES[cid]
    p = parse_proof(proof)
    abi = "0x" + "".join(f"{int(w):064x}" for w in packed_of(p))
    for enc in (
        snarkjs_of(p),
        {"packed": packed_of(p)},
        {"compressed": compressed_of(p)},
        abi,
        compressed_of(p),
        packed_of(p),
    ):
        assert parse_proof(enc) == p
    fast(vk, {"compressed": compressed_of(p)}, public)


# --- negative cases -----------------------------------------------------------------


def semaphore() -> tuple[Any, Proof, list[int]]:
    vk, proof, public = CASES[SEMAPHORE]
    return vk, parse_proof(proof), [int(x) for x in public]


def tamper(kind: str) -> tuple[Any, Any, Any]:
    """A broken variant of the 4-input Semaphore case."""
    vk, p, pub = semaphore()
    sj = snarkjs_of(p)
    if kind == "public+1":
        pub = [pub[0], pub[1] + 1, *pub[2:]]
    elif kind == "public>=r":
        pub = [pub[0] + R, *pub[1:]]
    elif kind == "A=-A":
        sj["pi_a"][1] = str(P - int(sj["pi_a"][1]))
    elif kind == "C.y+1":
        sj["pi_c"][1] = str(int(sj["pi_c"][1]) + 1)
    elif kind == "A.x+p":
        sj["pi_a"][0] = str(int(sj["pi_a"][0]) + P)
    elif kind == "B.y+p":
        sj["pi_b"][1][1] = str(int(sj["pi_b"][1][1]) + P)
    elif kind == "B-not-in-subgroup":
        (x0, x1), (y0, y1) = twist_point_off_subgroup(7)
        sj["pi_b"] = [[str(x0), str(x1)], [str(y0), str(y1)], ["1", "0"]]
    elif kind == "A-infinity":
        sj["pi_a"] = ["0", "1", "0"]
    elif kind == "C-infinity-packed":
        return vk, {"packed": [*packed_of(p)[:6], "0", "0"]}, pub
    elif kind == "B-infinity-packed":
        return vk, {"packed": packed_of(p)[:2] + ["0"] * 4 + packed_of(p)[6:]}, pub
    elif kind == "packed-B-not-swapped":
        w = packed_of(p)
        return vk, {"packed": [w[0], w[1], w[3], w[2], w[5], w[4], w[6], w[7]]}, pub
    elif kind == "compressed-sign-flipped":
        w = compressed_of(p)
        return vk, {"compressed": [hex(int(w[0], 16) ^ 1), *w[1:]]}, pub
    elif kind == "compressed-x>=p":
        w = compressed_of(p)
        return vk, {"compressed": [hex((P << 1) | 1), *w[1:]]}, pub
    elif kind == "wrong-vk":
        return worldid.key("semaphore_v3", 20), sj, pub
    else:
        raise AssertionError(kind)
    return vk, sj, pub


NEGATIVE = {
    "public+1": "pairing check failed",
    "public>=r": "not in the scalar field",
    "A=-A": "pairing check failed",
    "C.y+1": "not on the curve",
    "A.x+p": "not in the field",
    "B.y+p": "not in the field",
    "B-not-in-subgroup": "not in the G2 subgroup",
    "A-infinity": "infinity",
    "C-infinity-packed": "infinity",
    "B-infinity-packed": "infinity",
    "packed-B-not-swapped": "B is not on the twist curve",
    "compressed-sign-flipped": "pairing check failed",
    "compressed-x>=p": "does not decompress",
    "wrong-vk": "pairing check failed",
}
REFERENCE_NEGATIVE = ["public+1", "public>=r", "B-not-in-subgroup", "A.x+p"]


@pytest.mark.parametrize(
    ("impl", "kind"),
    [
        pytest.param(impl, k, id=f"{impl}-{k}")
        for impl in IMPLS
        for k in (NEGATIVE if impl == "fast" else REFERENCE_NEGATIVE)
    ],
)
def test_broken_proofs_are_rejected(impl: str, kind: str) -> None:
    """Each way of breaking a real proof raises InvalidProof with its own detail."""
    vk, proof, public = tamper(kind)
    with pytest.raises(InvalidProof) as err:
        IMPLS[impl](vk, proof, public)
    assert err.value.reason == "invalid_proof"
    assert NEGATIVE[kind] in err.value.detail


def test_unreduced_coordinate_would_otherwise_pass() -> None:
    """A.x + p is the same residue: a parser reducing mod p would accept it."""
    vk, p, pub = semaphore()
    verify(prepared_key(vk), Proof(((p.a[0] + P) % P, p.a[1]), p.b, p.c), pub)  # reduced: valid


def test_public_input_above_r_would_otherwise_pass() -> None:
    """x + r gives the same MSM: only the explicit range check stops it."""
    vk, _p, pub = semaphore()
    key = prepared_key(vk)
    assert c.g1_msm_fixed(key.vk.ic[0], key.ic_tables, [pub[0] + R, *pub[1:]]) == c.g1_msm_fixed(
        key.vk.ic[0], key.ic_tables, pub
    )


@pytest.mark.parametrize("public", [[], ["1"] * 3, ["1"] * 5])
def test_wrong_number_of_public_inputs_is_malformed(public: list[str]) -> None:
    """The input count must match the key."""
    vk, proof, _ = CASES[SEMAPHORE]
    with pytest.raises(Malformed):
        fast(vk, proof, public)


@pytest.mark.parametrize(
    "bad",
    [
        None,
        5,
        "0x",
        [1, 2, 3],
        {"pi_a": [1, 2, 1]},
        {"packed": [1] * 7},
        {"compressed": "x"},
        {"pi_a": ["1", "2", "1"], "pi_b": [["1"], ["2"]], "pi_c": ["1", "2", "1"]},
        {"protocol": "plonk", "pi_a": [], "pi_b": [], "pi_c": []},
        {"pi_a": ["1", "2", "2"], "pi_b": [["1", "0"], ["1", "0"]], "pi_c": ["1", "2"]},
        {"packed": ["-1"] + ["1"] * 7},
        {"packed": ["1.5"] + ["1"] * 7},
        {"packed": [True] + [1] * 7},
        {"packed": ["0x" + "f" * 65] + ["1"] * 7},
        {"packed": [str(1 << 256)] + ["1"] * 7},
        "0x" + "0" * 511,
        "0x" + "g" * 512,
    ],
)
def test_unparsable_proofs_are_malformed(bad: Any) -> None:
    """Shapes and numbers that are not a proof raise Malformed, nothing else."""
    with pytest.raises(Malformed):
        parse_proof(bad)


def test_key_validation() -> None:
    """Bad keys: missing parts are malformed, bad points invalid_key."""
    vk = CASES[SEMAPHORE][0]
    for missing in ("IC", "vk_delta_2", "vk_alpha_1"):
        with pytest.raises(Malformed):
            parse_vk({k: v for k, v in vk.items() if k != missing})
    (x0, x1), (y0, y1) = twist_point_off_subgroup(3)
    bad_delta = dict(vk, vk_delta_2=[[str(x0), str(x1)], [str(y0), str(y1)], ["1", "0"]])
    with pytest.raises(InvalidKey, match="subgroup"):
        parse_vk(bad_delta)
    bad_ic = copy.deepcopy(vk)
    bad_ic["IC"][2][1] = str(int(bad_ic["IC"][2][1]) + 1)
    with pytest.raises(InvalidKey, match="not on the curve"):
        parse_vk(bad_ic)
    with pytest.raises(Malformed, match="nPublic"):
        parse_vk(dict(vk, nPublic=3))


# --- caching, pickling, process pool ------------------------------------------------


def test_prepared_keys_are_cached_across_spellings() -> None:
    """The same key as decimal JSON or as hex JSON is prepared once."""
    vk = CASES["snarkjs-pub2"][0]
    first = prepared_key(vk)
    assert prepared_key(copy.deepcopy(vk)) is first

    def to_hex(o: Any) -> Any:
        if isinstance(o, list):
            return [to_hex(x) for x in o]
        if isinstance(o, str) and o.isdigit():
            return hex(int(o))
        return o

    hexed = {k: to_hex(v) if k != "nPublic" else v for k, v in vk.items()}
    assert prepared_key(hexed) is first


def test_prepared_key_pickles_and_still_verifies() -> None:
    """PreparedKey is plain data: it survives pickling (for process pools)."""
    vk, proof, public = CASES["snarkjs-pub2"]
    key = pickle.loads(pickle.dumps(prepare_key(vk)))  # noqa: S301 - our own bytes, just pickled
    verify(key, parse_proof(proof), parse_public(public))


def test_verify_job_in_a_process_pool() -> None:
    """verify_job runs in a worker on plain JSON; results re-raise in the parent."""
    vk, proof, public = CASES["snarkjs-pub1"]
    with ProcessPoolExecutor(max_workers=1) as pool:
        ok = pool.submit(verify_job, vk, proof, public).result()
        bad = pool.submit(verify_job, vk, proof, [str(int(public[0]) + 1)]).result()
        junk = pool.submit(verify_job, vk, "nonsense", public).result()
    assert ok is None
    assert bad is not None and bad[0] == "invalid_proof"
    assert junk is not None and junk[0] == "malformed"
    raise_job_result(ok)
    with pytest.raises(InvalidProof):
        raise_job_result(bad)
    with pytest.raises(VerificationError):
        raise_job_result(junk)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_directly_built_proofs_are_rechecked(impl: str) -> None:
    """verify does not trust a hand-built Proof: unreduced or off-curve points fail."""
    vk, p, pub = semaphore()
    bad = [
        Proof((p.a[0] + P, p.a[1]), p.b, p.c),
        Proof(p.a, p.b, (p.c[0], p.c[1] + 1)),
        Proof(p.a, (p.b[0], (p.b[1][0], p.b[1][1] + 1)), p.c),
    ]
    for proof in bad:
        with pytest.raises(InvalidProof):
            if impl == "fast":
                verify(prepared_key(vk), proof, pub)
            else:
                verify_reference(parse_vk(vk), proof, pub)
