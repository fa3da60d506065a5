"""`popgate verify zklogin|zklogin-nonce|poseidon|webbotauth` as a real subprocess:
JSON Lines in, one JSON line out per case, replays within one run caught."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.verifiers.test_webbotauth import AGENT_JWKS, PUB
from tests.verifiers.test_webbotauth import FIX as WBA
from tests.verifiers.test_webbotauth import NOW as WBA_NOW
from tests.verifiers.test_zklogin import FIX, JWT, NONCES, SALT, cli_case

POPGATE = Path(sys.executable).parent / "popgate"
ROOT = Path(__file__).resolve().parents[2]


def run(scheme: str, cases: list[Any]) -> list[dict[str, Any]]:
    lines = "\n".join(c if isinstance(c, str) else json.dumps(c) for c in cases) + "\n"
    proc = subprocess.run(
        [str(POPGATE), "verify", scheme], input=lines, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(x) for x in proc.stdout.splitlines()]


def test_zklogin_table_and_replay() -> None:
    """Every JWT case gives its reason; the valid token presented again in the run is `replayed`."""
    cases = [cli_case(c, salt=str(SALT)) for c in JWT["cases"]]
    res = run("zklogin", [*cases, cases[0], "{not json", "[1]"])
    want = [c["reason"] or "ok" for c in JWT["cases"]] + ["replayed", "malformed", "malformed"]
    assert [r["reason"] for r in res] == want
    assert res[0]["address"] == JWT["expected_address"]["address_padded"]
    assert res[0]["subject"] == "zklogin:" + res[0]["address"]


def test_zklogin_nonce_and_poseidon() -> None:
    """Nonces equal @mysten/sui generateNonce; Poseidon equals circomlibjs; junk is malformed."""
    res = run(
        "zklogin-nonce",
        [{k: v[k] for k in ("ext_eph_pk", "max_epoch", "randomness")} for v in NONCES]
        + [{"ext_eph_pk": "!!", "max_epoch": "1", "randomness": "1"}],
    )
    assert [r.get("nonce") for r in res[:-1]] == [v["nonce"] for v in NONCES]
    assert res[-1] == {"valid": False, "reason": "malformed"}
    vecs = json.loads((FIX / "poseidon_vectors.json").read_text())["vectors"]
    res = run("poseidon", [{"inputs": v["inputs"]} for v in vecs] + [{"inputs": []}])
    assert [r.get("hash") for r in res[:-1]] == [v["hash"] for v in vecs]
    assert res[-1]["reason"] == "malformed"


def test_webbotauth_cloudflare_vectors_and_replay() -> None:
    """web-bot-auth-signed requests verify; the same request again in the run is `replayed`."""
    cases = [
        {
            "method": r["method"],
            "url": r["url"],
            "headers": r["headers"],
            "jwks": AGENT_JWKS,
            "now": WBA_NOW + 5,
        }
        for r in WBA["requests"]
    ]
    res = run(
        "webbotauth",
        [
            *cases,
            cases[2],
            {**cases[0], "jwks": {"keys": [PUB["other"]]}},
            {**cases[0], "now": WBA_NOW + 3600},
        ],
    )
    assert [r["reason"] for r in res] == ["ok"] * len(cases) + ["replayed", "unknown_kid", "expired"]
    assert res[1]["subject"] == "signer.example.test"


def test_unknown_scheme_is_usage_error() -> None:
    """An unknown scheme exits 2 with a message."""
    proc = subprocess.run(
        [str(POPGATE), "verify", "nope"], input="", capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 2 and "unknown scheme" in proc.stderr


PROOFS = json.loads((FIX / "proof_vectors.json").read_text())


def _claims(token: str) -> dict[str, Any]:
    import base64

    seg = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))


def test_real_provider_jwts_bind_the_fastcrypto_key():
    """id_tokens signed by real providers (Karrier One, Credenza3, 3DOS, Arden, AWS Cognito,
    Microsoft, Playtron, FanTV; from fastcrypto's test vectors) verify with their JWKS, and
    their nonce commits to fastcrypto's test key with max_epoch 10 (a Sui epoch)."""
    n = PROOFS["nonce"]
    cases, late = [], []
    for v in PROOFS["real_jwts"]:
        c = _claims(v["jwt"])
        case = {
            "jwt": v["jwt"],
            "jwks": v["jwks"],
            "issuer": c["iss"],
            "audience": c["aud"],
            "ext_eph_pk": n["ext_eph_pk"],
            "max_epoch": "10",
            "randomness": n["randomness"],
            "epoch_mode": "sui",
            "current_epoch": "9",
            "now": c["iat"] + 30,
        }
        cases.append(case)
        late.append({**case, "now": c["exp"] + 3600})
    wrong = [
        {**cases[0], "randomness": "1"},
        {**cases[1], "audience": "someone-else"},
        {**cases[2], "current_epoch": "11"},
    ]
    res = run("zklogin", cases + late + wrong)
    k = len(cases)
    assert [r["reason"] for r in res[:k]] == ["ok"] * k, res[:k]
    assert {r["iss"] for r in res[:k]} == {_claims(v["jwt"])["iss"] for v in PROOFS["real_jwts"]}
    assert [r["reason"] for r in res[k : 2 * k]] == ["expired"] * k
    assert [r["reason"] for r in res[2 * k :]] == ["nonce_mismatch", "wrong_audience", "expired"]


def test_zklogin_proof_cli():
    """The real Google proof verifies from the prover's JSON and from the SDK's serialized
    signature; a later max_epoch, another issuer, a missing kid, garbage: each its reason."""
    p = PROOFS["proofs"][0]
    jwks = {"keys": [p["jwk"]]}
    raw = {"inputs": p["inputs"], "ext_eph_pk": p["ext_eph_pk"], "max_epoch": p["max_epoch"], "jwks": jwks}
    cases = [
        raw,
        {"zklogin_signature": p["zklogin_signature"], "jwks": jwks},
        {
            "zklogin_signature": p["zklogin_signature"],
            "modulus": p["jwk"]["n"],
            "issuer": "https://accounts.google.com",
        },
        {**raw, "max_epoch": p["max_epoch"] + 1},
        {**raw, "issuer": "https://id.twitch.tv/oauth2"},
        {**raw, "jwks": PROOFS["real_jwts"][0]["jwks"]},
        {"zklogin_signature": "BQ=="},
        "[]",
    ]
    res = run("zklogin-proof", cases)
    assert [r["reason"] for r in res] == [
        "ok",
        "ok",
        "ok",
        "invalid_proof",
        "wrong_issuer",
        "unknown_kid",
        "malformed",
        "malformed",
    ]
    assert res[0]["address"] == res[1]["address"] == p["address_unpadded"]
    assert res[0]["address_padded"] == p["address_padded"]
    assert (res[0]["iss"], res[0]["kid"], res[0]["max_epoch"]) == (p["iss"], p["kid"], 10)


def zk_config_file(tmp: Path, max_session: int) -> Path:
    """A popgate config whose [zklogin] table names the fixtures' provider (keys from a file)."""
    from tests.support.servers import write_config

    (tmp / "jwks.json").write_text(json.dumps(JWT["jwks"]))
    extra = f"""
[zklogin]
max_session = {max_session}
[[zklogin.providers]]
issuer = "{JWT["issuer"]}"
audience = "{JWT["audience"]}"
jwks_file = "{tmp / "jwks.json"}"
"""
    return write_config(tmp, "http://127.0.0.1:9", extra=extra)


def run_with(config: Path, scheme: str, cases: list[Any]) -> list[dict[str, Any]]:
    lines = "\n".join(json.dumps(c) for c in cases) + "\n"
    proc = subprocess.run(
        [str(POPGATE), "verify", scheme, "--config", str(config)],
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(x) for x in proc.stdout.splitlines()]


def test_zklogin_takes_the_config_table(tmp_path: Path) -> None:
    """`popgate verify zklogin --config` decides as the gateway would: the table's provider
    (issuer, audience and keys need not be in the case), its max_session (a max_epoch an
    hour ahead is max_epoch_too_far under max_session = 1800, ok without the table) and a
    subject keyed like the gateway's (the same in two runs; without --config it is per run)."""
    unix = next(c for c in JWT["cases"] if c["epoch_mode"] == "unix" and not c["reason"])
    bare = {k: v for k, v in cli_case(unix).items() if k not in ("jwks", "issuer", "audience")}
    strict = zk_config_file(tmp_path, 1800)
    assert run_with(strict, "zklogin", [bare])[0]["reason"] == "max_epoch_too_far"
    assert run("zklogin", [cli_case(unix)])[0]["reason"] == "ok"
    loose = zk_config_file(tmp_path, 7200)
    first, second = run_with(loose, "zklogin", [bare])[0], run_with(loose, "zklogin", [bare])[0]
    assert first["reason"] == "ok" and first["iss"] == JWT["issuer"]
    assert first["subject"] == second["subject"]
    assert run("zklogin", [cli_case(unix)])[0]["subject"] != run("zklogin", [cli_case(unix)])[0]["subject"]
