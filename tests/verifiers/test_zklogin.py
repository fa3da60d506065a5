"""zkLogin nonce binding, address maths and the session-setup verifier, against
@mysten/sui 1.45.2 outputs and jose-signed JWTs (tests/fixtures/gen/zklogin)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.cli.verify import load_checker, run_cases
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.jwks import JwksCache, ProviderConfig
from popgate.verifiers.oidc import OidcVerifier
from popgate.verifiers.poseidon import R
from popgate.verifiers.zklogin import (
    ZkLoginVerifier,
    address_from_seed,
    compute_nonce,
    gen_address_seed,
    hash_ascii_str_to_field,
    parse_ext_eph_pk,
    zklogin_address,
)

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "zklogin"
NONCES = json.loads((FIX / "nonce_vectors.json").read_text())["vectors"]
ADDR = json.loads((FIX / "address_vectors.json").read_text())
JWT = json.loads((FIX / "jwt_cases.json").read_text())
SALT = int(JWT["expected_address"]["salt"])
EPH = base64.b64decode(JWT["ext_eph_pk"])


@pytest.mark.parametrize("v", NONCES, ids=lambda v: f"{v['scheme']}-{v['max_epoch']}")
def test_nonce_matches_sdk(v: dict) -> None:
    """compute_nonce equals generateNonce for Ed25519/secp256k1/secp256r1 keys and any max_epoch."""
    pk = base64.b64decode(v["ext_eph_pk"])
    assert parse_ext_eph_pk(pk).scheme == v["scheme"]
    assert compute_nonce(pk, int(v["max_epoch"]), int(v["randomness"])) == v["nonce"]


def test_nonce_reference_vector_from_docs() -> None:
    """The fastcrypto/Sui-docs vector (Ed25519 key from StdRng seed 0)."""
    pk = b"\x00" + base64.b64decode("ucbuFjDvPnERRKZI2wa7sihPcnTPvuU//O5QPMGkkgA=")
    assert compute_nonce(pk, 10, 100681567828351849884072155819400689117) == "hTPpgF7XAKbW37rEUS6pEVZqmoI"


@given(st.binary(min_size=33, max_size=34), st.integers(0, 2**64 - 1), st.integers(0, R - 1))
def test_nonce_shape(pk: bytes, epoch: int, rnd: int) -> None:
    """Always 27 base64url characters (20 bytes), no padding."""
    n = compute_nonce(pk, epoch, rnd)
    assert len(n) == 27 and "=" not in n and len(base64.urlsafe_b64decode(n + "=")) == 20


@pytest.mark.parametrize("epoch,rnd", [(-1, 0), (2**64, 0), (0, R), (0, -1)])
def test_nonce_rejects_out_of_range(epoch: int, rnd: int) -> None:
    """max_epoch must be a u64 and randomness a field element."""
    with pytest.raises(ValueError):
        compute_nonce(EPH, epoch, rnd)


@pytest.mark.parametrize("h", ADDR["hash_ascii"], ids=lambda h: f"{len(h['str'])}-{h['max_len']}")
def test_hash_ascii_str_to_field(h: dict) -> None:
    """hashASCIIStrToField, including >16 limbs (the two-level tree)."""
    assert hash_ascii_str_to_field(h["str"], h["max_len"]) == int(h["hash"])


def test_hash_ascii_rejects() -> None:
    """Too long and non-ASCII strings raise ValueError (the circuit cannot hash them)."""
    with pytest.raises(ValueError):
        hash_ascii_str_to_field("x" * 33, 32)
    with pytest.raises(ValueError):
        hash_ascii_str_to_field("é", 32)


@pytest.mark.parametrize("v", ADDR["addresses"], ids=lambda v: v["address_seed"][:12])
def test_addresses(v: dict) -> None:
    """genAddressSeed and both address forms (padded / unpadded seed bytes)."""
    seed = int(v["address_seed"])
    if "salt" in v:
        assert gen_address_seed(int(v["salt"]), v["claim_name"], v["claim_value"], v["aud"]) == seed
        assert (
            zklogin_address(salt=int(v["salt"]), iss=v["iss"], aud=v["aud"], sub=v["claim_value"])
            == v["address_default"]
        )
    assert address_from_seed(seed, v["iss"], padded=True) == v["address_padded"]
    assert address_from_seed(seed, v["iss"], padded=False) == v["address_unpadded"]


def test_small_seed_forms_differ() -> None:
    """Below 2^248 the two forms differ (the documented trap); above they agree."""
    small = [v for v in ADDR["addresses"] if int(v["address_seed"]) < 2**248]
    assert small and all(v["address_padded"] != v["address_unpadded"] for v in small)
    big = [v for v in ADDR["addresses"] if int(v["address_seed"]) >= 2**248]
    assert big and all(v["address_padded"] == v["address_unpadded"] for v in big)


@pytest.mark.parametrize(
    "raw",
    [b"", b"\x00" + b"\x01" * 31, b"\x03" + b"\x02" * 33, b"\x01" + b"\x04" + b"\x00" * 32, b"\x00" * 34],
)
def test_ext_eph_pk_rejects(raw: bytes) -> None:
    """Unknown flag, wrong length or uncompressed EC point: malformed."""
    with pytest.raises(VerificationError) as e:
        parse_ext_eph_pk(raw)
    assert e.value.reason == "malformed"


# --- the session-setup verifier over the jose-signed JWT table ------------------------------


def make_verifier(mode: str = "unix", **kw: Any) -> ZkLoginVerifier:
    p = ProviderConfig(issuer=JWT["issuer"], audiences=frozenset([JWT["audience"]]), jwks=JWT["jwks"])
    kw.setdefault("salt", SALT)
    return ZkLoginVerifier(OidcVerifier([p], JwksCache()), epoch_mode=mode, **kw)  # type: ignore[arg-type]


async def run_case(jwt: str, mode: str = "unix", pk: bytes = EPH, **kw: Any) -> Any:
    s = JWT["sessions"][mode]
    cur = int(s["current_epoch"]) if mode == "sui" else None
    return await make_verifier(mode).verify(
        jwt, pk, int(s["max_epoch"]), int(s["randomness"]), now=kw.get("now", JWT["now"]), current_epoch=cur
    )


@pytest.mark.parametrize("case", JWT["cases"], ids=lambda c: c["name"])
async def test_jwt_table(case: dict) -> None:
    """Every jose-made token gives its expected outcome (reason '' = valid)."""
    if case["reason"]:
        with pytest.raises(VerificationError) as e:
            await run_case(case["jwt"], case["epoch_mode"])
        assert e.value.reason == case["reason"]
    else:
        att = await run_case(case["jwt"], case["epoch_mode"])
        assert att.address == JWT["expected_address"]["address_padded"]
        assert att.subject == "zklogin:" + att.address and att.sub == "110169484474386276334"


def _swap(jwt: str, index: int, new: str) -> str:
    parts = jwt.split(".")
    parts[index] = new
    return ".".join(parts)


async def test_tampered_payload_and_signature() -> None:
    """Changing one payload claim or one signature byte gives bad_signature."""
    valid = JWT["cases"][0]["jwt"]
    payload = json.loads(base64.urlsafe_b64decode(valid.split(".")[1] + "=="))
    payload["sub"] = "someone-else"
    seg = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    sig = bytearray(base64.urlsafe_b64decode(valid.split(".")[2] + "=="))
    sig[10] ^= 1
    bad_sig = base64.urlsafe_b64encode(bytes(sig)).rstrip(b"=").decode()
    for tok in (_swap(valid, 1, seg), _swap(valid, 2, bad_sig)):
        with pytest.raises(VerificationError) as e:
            await run_case(tok)
        assert e.value.reason == "bad_signature"


async def test_nonce_bound_to_key_epoch_and_randomness() -> None:
    """Another key, max_epoch or randomness than the JWT nonce commits to: nonce_mismatch."""
    valid, s = JWT["cases"][0]["jwt"], JWT["sessions"]["unix"]
    other_pk = b"\x00" + bytes(32)
    v = make_verifier()
    for pk, me, rnd in [
        (other_pk, int(s["max_epoch"]), int(s["randomness"])),
        (EPH, int(s["max_epoch"]) - 1, int(s["randomness"])),
        (EPH, int(s["max_epoch"]), int(s["randomness"]) + 1),
    ]:
        with pytest.raises(VerificationError) as e:
            await v.verify(valid, pk, me, rnd, now=JWT["now"])
        assert e.value.reason == "nonce_mismatch"


async def test_epoch_rules() -> None:
    """unix: max_epoch < now is expired, beyond now + max_session is max_epoch_too_far (not
    malformed: the client sent a well-formed value the operator's limit refuses);
    sui: needs current <= max <= current + 30."""
    valid, s = JWT["cases"][0]["jwt"], JWT["sessions"]["unix"]
    with pytest.raises(VerificationError) as e:
        await make_verifier().verify(
            valid, EPH, int(s["max_epoch"]), int(s["randomness"]), now=int(s["max_epoch"]) + 1
        )
    assert e.value.reason == "expired"
    sui, ss = JWT["cases"][1]["jwt"], JWT["sessions"]["sui"]
    with pytest.raises(VerificationError) as e:
        make_verifier().check_epoch(1_800_000_000 + 7 * 86400 + 1, 1_800_000_000, None)
    assert e.value.reason == "max_epoch_too_far"
    assert make_verifier().check_epoch(1_800_000_000 + 7 * 86400, 1_800_000_000, None) == 1_800_604_800
    for cur, reason in [(813, "expired"), (812 - 31, "max_epoch_too_far"), (None, "malformed")]:
        with pytest.raises(VerificationError) as e:
            await make_verifier("sui").verify(
                sui, EPH, 812, int(ss["randomness"]), now=JWT["now"], current_epoch=cur
            )
        assert e.value.reason == reason
    att = await make_verifier("sui").verify(
        sui, EPH, 812, int(ss["randomness"]), now=JWT["now"], current_epoch=812
    )
    assert att.expires_at is None and att.max_epoch == 812


async def test_keyed_subject_without_salt() -> None:
    """Without a salt the subject is a keyed hash: stable per key, different across keys."""
    valid, s = JWT["cases"][0]["jwt"], JWT["sessions"]["unix"]
    args = (valid, EPH, int(s["max_epoch"]), int(s["randomness"]))
    a = await make_verifier(salt=None, subject_key=b"k1").verify(*args, now=JWT["now"])
    b = await make_verifier(salt=None, subject_key=b"k1").verify(*args, now=JWT["now"])
    c = await make_verifier(salt=None, subject_key=b"k2").verify(*args, now=JWT["now"])
    assert a.subject == b.subject != c.subject and a.subject.startswith("oidc:") and a.address is None
    assert a.sub not in a.subject


def test_verifier_config_checks() -> None:
    """Neither salt nor subject key, a bad mode or an out-of-field salt: ValueError at build."""
    for mode, kw in (("unix", {"salt": None}), ("bogus", {}), ("unix", {"salt": R})):
        with pytest.raises(ValueError):
            make_verifier(mode, **kw)


# --- CLI adapters --------------------------------------------------------------------------


async def run_cli(scheme: str, cases: list[dict]) -> list[dict]:
    out = io.StringIO()
    await run_cases(load_checker(scheme), None, io.StringIO("\n".join(map(json.dumps, cases))), out)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def cli_case(case: dict, **extra: Any) -> dict:
    s = JWT["sessions"][case["epoch_mode"]]
    d = {
        "jwt": case["jwt"],
        "jwks": JWT["jwks"],
        "issuer": JWT["issuer"],
        "audience": JWT["audience"],
        "ext_eph_pk": JWT["ext_eph_pk"],
        "max_epoch": s["max_epoch"],
        "randomness": s["randomness"],
        "now": JWT["now"],
        "epoch_mode": s["epoch_mode"],
    }
    if "current_epoch" in s:
        d["current_epoch"] = s["current_epoch"]
    return {**d, **extra}


async def test_cli_zklogin() -> None:
    """`popgate verify zklogin` gives the reason table and subject/address for valid cases."""
    res = await run_cli("zklogin", [cli_case(c, salt=str(SALT)) for c in JWT["cases"]])
    for case, r in zip(JWT["cases"], res):
        assert r["reason"] == (case["reason"] or "ok"), case["name"]
    assert res[0]["address"] == JWT["expected_address"]["address_padded"]
    assert res[0]["subject"] == "zklogin:" + res[0]["address"]
    nosalt = await run_cli("zklogin", [cli_case(JWT["cases"][0])])
    assert nosalt[0]["valid"] and nosalt[0]["address"] is None and nosalt[0]["subject"].startswith("oidc:")


async def test_cli_nonce_and_poseidon() -> None:
    """`zklogin-nonce` and `poseidon` reproduce the SDK / circomlib vectors; junk is malformed."""
    res = await run_cli(
        "zklogin-nonce",
        [
            {"ext_eph_pk": v["ext_eph_pk"], "max_epoch": v["max_epoch"], "randomness": v["randomness"]}
            for v in NONCES
        ],
    )
    assert [r["nonce"] for r in res] == [v["nonce"] for v in NONCES]
    vecs = json.loads((FIX / "poseidon_vectors.json").read_text())["vectors"][::7]
    res = await run_cli("poseidon", [{"inputs": v["inputs"]} for v in vecs])
    assert [r["hash"] for r in res] == [v["hash"] for v in vecs]
    bad = await run_cli(
        "poseidon", [{"inputs": []}, {"inputs": [str(R)]}, {"inputs": ["-1"]}, {"inputs": "1"}]
    )
    assert all(r == {"valid": False, "reason": "malformed"} for r in bad)
    bad = await run_cli(
        "zklogin-nonce",
        [
            {"ext_eph_pk": "!!", "max_epoch": "1", "randomness": "1"},
            {"ext_eph_pk": NONCES[0]["ext_eph_pk"], "max_epoch": "x", "randomness": "1"},
        ],
    )
    assert all(r["reason"] == "malformed" for r in bad)
