"""World ID 3.x: IDKit hashing, result parsing, canonical nullifiers, local
verification, and the ``popgate verify worldid`` / ``groth16`` adapters."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.cli.verify import VerifyEnv, run_cases
from popgate.gateway.stores.memory import MemoryStore
from popgate.verifiers import worldid as w
from popgate.verifiers.bn254.fields import R
from popgate.verifiers.cli import groth16 as cli_groth16
from popgate.verifiers.cli import worldid as cli_worldid
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.groth16 import InvalidProof, parse_vk, prepared_key

FIX = Path(__file__).resolve().parent.parent / "fixtures" / "groth16"
WID = json.loads((FIX / "worldid_v3_local.json").read_text())["cases"]
LOCAL_VK = json.loads((FIX / "semaphore_v3_local_depth20.vk.json").read_text())
ROOT = WID[0]["idkit2_result"]["merkle_root"]


@pytest.mark.parametrize("case", WID, ids=lambda c: repr(c["signal"]))
def test_hashes_match_idkit(case: dict[str, Any]) -> None:
    """signal_hash and the external nullifier equal what @worldcoin/idkit-core 2.1.0 computed."""
    assert f"0x{w.signal_hash(case['signal']):064x}" == case["signal_hash"]
    assert f"0x{w.external_nullifier(case['app_id'], case['action']):064x}" == case["external_nullifier"]


def test_published_hash_vectors() -> None:
    """Values from idkit-js tests and the portal's default signal hash."""
    assert (
        f"0x{w.signal_hash(''):064x}" == "0x00c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a4"
    )
    assert w.signal_hash(None) == w.signal_hash("")
    assert hex(w.signal_hash("0xaaad5A58AB11bc7eE9668f6b7fF52BDde0C64774")).endswith("8fe5")
    assert w.encode_signal("0xABC") == bytes([0x0A, 0xBC])
    with pytest.raises(Malformed):
        w.encode_signal("0xnothex")


@pytest.mark.parametrize("case", WID, ids=lambda c: repr(c["signal"]))
@pytest.mark.parametrize("shape", ["idkit2_result", "idkit4_v3_item", "idkit4_result"])
async def test_results_verify(case: dict[str, Any], shape: str) -> None:
    """IDKit 2.x results, 4.x v3 items and 4.x results holding one all verify."""
    result = (
        {"protocol_version": "3.0", "responses": [case["idkit4_v3_item"]]}
        if shape == "idkit4_result"
        else case[shape]
    )
    out = await w.verify_result(
        prepared_key(LOCAL_VK),
        result,
        app_id=case["app_id"],
        action=case["action"],
        signal=case["signal"],
        valid_roots={int(ROOT, 16)},
    )
    assert out.nullifier == case["idkit2_result"]["nullifier_hash"]
    assert out.signal_hash == case["signal_hash"] and out.external_nullifier == case["external_nullifier"]
    assert out.verification_level == "orb"


async def test_client_sent_signal_hash_is_ignored() -> None:
    """A forged signal_hash in a 4.x item changes nothing: popgate hashes the signal itself."""
    case = WID[1]
    item = dict(case["idkit4_v3_item"], signal_hash=WID[0]["signal_hash"])
    key = prepared_key(LOCAL_VK)
    await w.verify_result(
        key,
        item,
        app_id=case["app_id"],
        action=case["action"],
        signal=case["signal"],
        valid_roots={int(ROOT, 16)},
    )
    with pytest.raises(InvalidProof):
        await w.verify_result(
            key,
            item,
            app_id=case["app_id"],
            action=case["action"],
            signal=WID[0]["signal"],
            valid_roots={int(ROOT, 16)},
        )


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"signal": "another signal"}, "invalid_proof"),
        ({"action": "another-action"}, "invalid_proof"),
        ({"app_id": "app_staging_other"}, "invalid_proof"),
        ({"valid_roots": set()}, "unknown_root"),
    ],
)
async def test_wrong_context_is_rejected(change: dict[str, Any], reason: str) -> None:
    """A proof made for one app/action/signal fails for another; unknown roots fail first."""
    case = WID[0]
    kw: dict[str, Any] = {
        "app_id": case["app_id"],
        "action": case["action"],
        "signal": case["signal"],
        "valid_roots": {int(ROOT, 16)},
    }
    kw.update(change)
    with pytest.raises(VerificationError) as err:
        await w.verify_result(prepared_key(LOCAL_VK), case["idkit2_result"], **kw)
    assert err.value.reason == reason


@pytest.mark.parametrize(
    "result",
    [
        None,
        [],
        {"proof": "0x00"},
        {"merkle_root": "0x1", "nullifier_hash": "0x2"},
        {"merkle_root": "zz", "nullifier_hash": "0x2", "proof": "0x" + "0" * 512},
        {"merkle_root": "0x1", "nullifier_hash": "0x2", "proof": "[[1]]"},
        {"merkle_root": "0x1", "nullifier_hash": "0x2", "proof": "0x" + "0" * 512, "verification_level": 3},
        {"responses": [{"identifier": "orb", "proof": ["1"] * 5, "nullifier": "0x1"}]},
    ],
)
def test_malformed_results(result: Any) -> None:
    """Unparsable results raise Malformed."""
    with pytest.raises(Malformed):
        w.parse_result(result)


def test_nested_json_proof_string() -> None:
    """The portal's nested ``[[a],[[b],[b]],[c]]`` JSON string parses to the same proof."""
    res = WID[0]["idkit2_result"]
    words = [res["proof"][2 + 64 * i : 66 + 64 * i] for i in range(8)]
    nested = json.dumps(
        [
            ["0x" + words[0], "0x" + words[1]],
            [["0x" + words[2], "0x" + words[3]], ["0x" + words[4], "0x" + words[5]]],
            ["0x" + words[6], "0x" + words[7]],
        ]
    )
    assert w.parse_result(dict(res, proof=nested)) == w.parse_result(res)


def test_canonical_nullifier_spellings() -> None:
    """0xABC, abc, ABC and zero-padded forms are one nullifier."""
    want = "0x" + "0" * 61 + "abc"
    for s in ("0xABC", "abc", "ABC", "0x0abc", "0X" + "0" * 61 + "ABC", 0xABC):
        assert w.canonical_nullifier(s) == want
    for bad in ("", "0x", "xyz", "-1", hex(R), True, None, "0x" + "1" * 129):
        with pytest.raises(Malformed):
            w.canonical_nullifier(bad)  # type: ignore[arg-type]


@given(st.integers(min_value=0, max_value=R - 1), st.integers(min_value=0, max_value=8), st.booleans())
def test_canonical_nullifier_property(n: int, pad: int, upper: bool) -> None:
    """Every hex spelling of n maps to f"0x{n:064x}"."""
    s = "0" * pad + f"{n:x}"
    s = s.upper() if upper else s
    assert w.canonical_nullifier(s) == w.canonical_nullifier("0x" + s) == f"0x{n:064x}"


def test_bundled_keys() -> None:
    """The production key is Semaphore v3 depth 30; other depths and v4 are selectable."""
    prod, pse30 = parse_vk(w.key("worldid_v3")), parse_vk(w.key("semaphore_v3", 30))
    assert prod == pse30 and prod.n_public == 4
    assert parse_vk(w.key_spec("semaphore_v3:30")) == prod == parse_vk(w.key_spec("worldid_v3"))
    assert parse_vk(w.key_spec("semaphore_v4:10")) == parse_vk(w.key("semaphore_v4", 10))
    assert parse_vk(w.key("semaphore_v4", 1)).n_public == 4
    for bad in (("semaphore_v3", 15), ("semaphore_v4", 33), ("nope", 1)):
        with pytest.raises(ValueError):
            w.key(*bad)
    for spec in ("semaphore_v3:x", "semaphore_v3:15", "", "worldid_v3:29"):
        with pytest.raises(Malformed):
            w.key_spec(spec)


# --- CLI adapters -------------------------------------------------------------------


def env() -> VerifyEnv:
    return VerifyEnv(store=MemoryStore(), config=None, now=0.0)


def cli_case(i: int, **over: Any) -> dict[str, Any]:
    c = WID[i]
    case = {
        "app_id": c["app_id"],
        "action": c["action"],
        "signal": c["signal"],
        "result": c["idkit2_result"],
        "valid_roots": [ROOT],
        "vk": LOCAL_VK,
    }
    case.update(over)
    return case


def test_worldid_adapter_spends_nullifiers_once() -> None:
    """A valid case outputs the canonical nullifier; the same nullifier again, in
    any spelling or result shape, is nullifier_reused; other actions are separate."""

    async def go() -> None:
        e = env()
        out = await cli_worldid.check(cli_case(0), e)
        assert out["nullifier"] == WID[0]["idkit2_result"]["nullifier_hash"]
        item = dict(WID[0]["idkit4_v3_item"])
        for spelling in (item["nullifier"].upper(), str(int(item["nullifier"], 16))):
            with pytest.raises(VerificationError) as err:
                await cli_worldid.check(cli_case(0, result=dict(item, nullifier=spelling)), e)
            assert err.value.reason == "nullifier_reused"
        await cli_worldid.check(cli_case(2), e)  # same person, other action

    asyncio.run(go())


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"valid_roots": ["0x1234"]}, "unknown_root"),
        ({"signal": "tampered"}, "invalid_proof"),
        ({"vk": None}, "invalid_proof"),  # production key: not the key the proof was made for
        ({"valid_roots": "0x1"}, "malformed"),
        ({"app_id": 5}, "malformed"),
        ({"result": {"proof": "0x"}}, "malformed"),
    ],
)
def test_worldid_adapter_failures(over: dict[str, Any], reason: str) -> None:
    """Unknown root, bad proof and unparsable cases give their reasons; nothing is spent."""

    async def go() -> None:
        e = env()
        with pytest.raises(VerificationError) as err:
            await cli_worldid.check(cli_case(0, **over), e)
        assert err.value.reason == reason
        await cli_worldid.check(cli_case(0), e)  # the nullifier was not burnt

    asyncio.run(go())


def test_verify_worldid_jsonl_run() -> None:
    """Through the real driver: valid, replay, unknown root, garbage."""
    lines = [
        json.dumps(cli_case(0)),
        json.dumps(cli_case(0)),
        json.dumps(cli_case(1, valid_roots=["0x1"])),
        json.dumps(cli_case(1)),
        "not json",
    ]
    out = io.StringIO()
    asyncio.run(run_cases(cli_worldid.check, None, io.StringIO("\n".join(lines)), out))
    got = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [g["reason"] for g in got] == ["ok", "nullifier_reused", "unknown_root", "ok", "malformed"]
    assert got[0]["nullifier"] == WID[0]["idkit2_result"]["nullifier_hash"]


def test_verify_groth16_jsonl_run() -> None:
    """groth16 adapter: snarkjs, packed and compressed proofs; a wrong input; garbage."""
    pub2 = json.loads((FIX / "pub2.json").read_text())
    sem = json.loads((FIX / "semaphore_v3_js.json").read_text())["cases"][0]
    wc = json.loads((FIX / "worldid_contracts_inclusion_depth16.json").read_text())
    cases = [
        {"vk": pub2["vk"], "proof": pub2["proof"], "public": pub2["public"]},
        {"vk": LOCAL_VK, "proof": {"packed": sem["packed"]}, "public": sem["public"]},
        {
            "vk": w.key("semaphore_v3", 16),
            "proof": {"packed": wc["packed"]},
            "public": [wc["root"], wc["nullifier_hash"], wc["signal_hash"], wc["external_nullifier_hash"]],
        },
        {"vk": pub2["vk"], "proof": pub2["proof"], "public": ["1", pub2["public"][1]]},
        {"vk": pub2["vk"], "proof": {"compressed": ["1", "2"]}, "public": pub2["public"]},
        {"vk": pub2["vk"]},
    ]
    out = io.StringIO()
    asyncio.run(run_cases(cli_groth16.check, None, io.StringIO("\n".join(map(json.dumps, cases))), out))
    got = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [g["reason"] for g in got] == ["ok", "ok", "ok", "invalid_proof", "malformed", "malformed"]
    assert got[0]["n_public"] == 2


def test_worldid_adapter_accepts_a_named_key() -> None:
    """ "vk": "semaphore_v3:16" selects a bundled key (here: the world-id-contracts proof)."""
    wc = json.loads((FIX / "worldid_contracts_inclusion_depth16.json").read_text())
    abi = "0x" + "".join(f"{int(x, 16):064x}" for x in wc["packed"])
    result = {
        "proof": abi,
        "merkle_root": wc["root"],
        "nullifier_hash": wc["nullifier_hash"],
        "verification_level": "orb",
    }
    # popgate hashes signal/action itself, so only the raw proof check applies here:
    key = prepared_key(w.key_spec("semaphore_v3:16"))
    parsed = w.parse_result(result)
    from popgate.verifiers.groth16 import verify

    verify(
        key,
        parsed.proof,
        [
            parsed.merkle_root,
            parsed.nullifier,
            int(wc["signal_hash"], 16),
            int(wc["external_nullifier_hash"], 16),
        ],
    )
    assert parsed.proof.packed() == [int(x, 16) for x in wc["packed"]]

    async def go() -> None:
        case = cli_case(0, vk="semaphore_v3:20")  # a real key, but not this proof's
        with pytest.raises(VerificationError) as err:
            await cli_worldid.check(case, env())
        assert err.value.reason == "invalid_proof"
        with pytest.raises(VerificationError) as err:
            await cli_worldid.check(cli_case(0, vk="semaphore_v9:1"), env())
        assert err.value.reason == "malformed"

    asyncio.run(go())
