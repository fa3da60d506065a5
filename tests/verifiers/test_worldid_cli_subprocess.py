"""``popgate verify groth16|worldid`` as a real subprocess, JSON Lines in and out."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.gateway.schemes.worldid_support import CASES, FIX, ROOT, VK_FILE

POPGATE = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "popgate"


def run(scheme: str, cases: list[object]) -> list[dict]:
    lines = "\n".join(c if isinstance(c, str) else json.dumps(c) for c in cases) + "\n"
    proc = subprocess.run(
        [str(POPGATE), "verify", scheme], input=lines, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(x) for x in proc.stdout.splitlines()]


def test_worldid_cli_replay_is_nullifier_reused():
    vk = json.loads(VK_FILE.read_text())

    def case(i: int, **kw: object) -> dict:
        c = CASES[i]
        return {
            "app_id": c["app_id"],
            "action": c["action"],
            "signal": c["signal"],
            "result": c["idkit2_result"],
            "valid_roots": [ROOT],
            "vk": vk,
            **kw,
        }

    out = run(
        "worldid",
        [
            case(0),
            case(1),
            case(0),
            case(0, valid_roots=["0x01"]),
            case(1, signal="other"),
            "not json",
            case(3),
        ],
    )
    assert [o["reason"] for o in out] == [
        "ok",
        "ok",
        "nullifier_reused",
        "unknown_root",
        "invalid_proof",
        "malformed",
        "ok",
    ]
    assert out[0]["nullifier"] == CASES[0]["idkit2_result"]["nullifier_hash"].lower()
    assert [o["valid"] for o in out] == [True, True, False, False, False, False, True]


def test_groth16_cli():
    pub2 = json.loads((FIX / "pub2.json").read_text())
    good = {"vk": pub2["vk"], "proof": pub2["proof"], "public": pub2["public"]}
    out = run("groth16", [good, {**good, "public": ["1", pub2["public"][1]]}, {"vk": pub2["vk"]}])
    assert [o["reason"] for o in out] == ["ok", "invalid_proof", "malformed"]


def test_worldid_cli_v4_offline():
    """World ID 4.0 offline: the protocol's real test proof under the production key, the
    chain facts in the case, no network; single-field negatives; replay."""
    real = json.loads((FIX / "worldid_v4_verifier_test.json").read_text())
    result = {"protocol_version": "4.0", "nonce": real["nonce"], "responses": [real["item"]]}
    base = {
        "app_id": "app_test",
        "action_hash": real["action_hash"],
        "signal": real["signal"],
        "rp_id": real["rp_id"],
        "result": result,
        "chain": real["chain"],
        "now": real["now"],
    }

    def case(**kw: object) -> dict:
        return {**base, **kw}

    chain = real["chain"]
    oprf = chain["oprf_keys"][real["rp_id"]]  # the right key, registered for another rp id
    out = run(
        "worldid",
        [
            case(),
            case(),
            case(nonce="0x1"),
            case(signal="other"),
            case(rp_id="rp_0000000000000002", chain={**chain, "oprf_keys": {"2": oprf}}),
            case(chain={**chain, "issuer_keys": {"1": real["wrong"]["issuer_key"]}}),
            case(now=real["item"]["expires_at_min"] + 18001),
            case(chain={**chain, "valid_roots": ["0x1"]}),
            case(chain={**chain, "tree_depth": 31}),
            case(action="some-action", action_hash=None),
            case(chain="nope"),
        ],
    )  # fmt: skip
    assert [o["reason"] for o in out] == [
        "ok",
        "nullifier_reused",
        "invalid_proof",
        "invalid_proof",
        "invalid_proof",
        "invalid_proof",
        "credential_expired",
        "unknown_root",
        "invalid_proof",
        "invalid_proof",
        "malformed",
    ], out
    assert out[0]["nullifier"] == real["item"]["nullifier"] and out[0]["protocol_version"] == "4.0"


def test_worldid_cli_v4_action_string_and_both_versions():
    """An action given as a string (hashed by popgate) and a result holding a v3 and a v4
    item: both checked, both nullifiers spent (a v3-only replay is then refused)."""
    local = json.loads((FIX / "worldid_v4_local.json").read_text())
    c = local["cases"][2]
    v3 = CASES[0]
    base = {
        "app_id": v3["app_id"],
        "action": local["action"],
        "rp_id": local["rp_id"],
        "chain": local["chain"],
        "vk": local["vk"],
        "now": local["created_at"],
        "result": {"protocol_version": "4.0", "nonce": c["nonce"], "responses": [c["item"]]},
    }
    both = {**base, "result": {**base["result"], "responses": [v3["idkit4_v3_item"], c["item"]]}}
    v3_vk = json.loads(VK_FILE.read_text())
    out = run(
        "worldid",
        [
            {**base, "action": "another"},
            {**both, "valid_roots": [ROOT], "v3_vk": v3_vk},
            {"app_id": v3["app_id"], "action": v3["action"], "signal": "", "result": v3["idkit2_result"],
             "valid_roots": [ROOT], "vk": v3_vk},
        ],
    )  # fmt: skip
    assert [o["reason"] for o in out] == ["invalid_proof", "ok", "nullifier_reused"], out
