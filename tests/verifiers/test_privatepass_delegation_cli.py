"""`popgate verify privatepass` and `popgate verify delegation`: JSON Lines in, one verdict per
line out, replays caught within a run (the real command, in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from popgate.gateway.agent import Delegated, public_jwk
from popgate.gateway.ops.config import load_config
from popgate.verifiers.delegation import key_binding
from popgate.verifiers.privatepass import TokenChallenge, b64u, parse_challenge
from popgate.verifiers.session import SessionCodec
from tests.support.servers import write_config

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "tests/fixtures/privatepass/pub_verif_rfc9578.go.json").read_text())


def verify(scheme: str, cases: list[Any], *args: str) -> list[dict[str, Any]]:
    lines = "\n".join(c if isinstance(c, str) else json.dumps(c) for c in cases) + "\n"
    proc = subprocess.run(
        [sys.executable, "-m", "popgate.gateway", "verify", scheme, *args],
        input=lines,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=ROOT,
    )
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_verify_privatepass() -> None:
    """RFC 9578 vectors: valid with their nonce; the same token again `replayed`; a challenge
    naming another issuer or origin `wrong_challenge`; a tampered token `invalid_token`."""
    v = VECTORS[0]
    raw_challenge = bytes.fromhex(v["token_challenge"])
    ch = parse_challenge(raw_challenge)
    case = {
        "token": b64u(bytes.fromhex(v["token"])),
        "challenge": b64u(raw_challenge),
        "token_key": b64u(bytes.fromhex(v["pkS"])),
    }
    other = TokenChallenge(ch.issuer_name, ch.redemption_context, "elsewhere.example").encode()
    bad = bytearray(bytes.fromhex(VECTORS[1]["token"]))
    bad[200] ^= 0xFF
    out = verify(
        "privatepass",
        [
            case,
            case,
            {**case, "challenge": b64u(other)},
            {**case, "origin_info": "elsewhere.example"},
            {
                "token": f"PrivateToken token={b64u(bytes(bad))}",
                "challenge": b64u(bytes.fromhex(VECTORS[1]["token_challenge"])),
                "issuer_keys": [b64u(bytes.fromhex(VECTORS[1]["pkS"]))],
            },
            "not json",
            {"token": "AAIA", "challenge": "AAAA", "token_key": "AAAA"},
        ],
    )
    assert out[0] == {
        "valid": True,
        "reason": "ok",
        "nonce": v["nonce"],
        "token_key_id": out[0]["token_key_id"],
        "issuer": "issuer.example",
        "origin_info": ch.origin_info,
    }
    assert [o["reason"] for o in out[1:]] == [
        "replayed",
        "wrong_challenge",
        "wrong_challenge",
        "invalid_token",
        "malformed",
        "malformed",
    ]


def test_verify_delegation(tmp_path: Path) -> None:
    """A delegated agent's signed request: valid with who backs it; replayed signature nonce,
    wrong key, out of scope, expired, and a non-delegation session refused."""
    path = write_config(tmp_path, "http://127.0.0.1:1", extra="[delegation]\nrequire_nonce = true\n")
    cfg = load_config(path)
    codec = SessionCodec(cfg.sessions.keys, cfg.sessions.signing_kid)
    now = int(time.time())
    key = ed25519.Ed25519PrivateKey.generate()
    token = codec.issue(
        klass="backed-agent",
        subject="worldid:alice",
        now=now,
        ttl=300,
        scope="/api",
        evidence="delegation",
        binding=key_binding(public_jwk(key)),
        budget=10,
    )
    keyid = codec.verify(token, now).token_id
    agent = Delegated(token, keyid, key)
    url = "https://api.example.com/api/x"

    def case(a: Delegated, target: str = url, at: int = now, nonce: str = "n1") -> dict[str, Any]:
        return {"method": "GET", "url": target, "headers": a.headers("GET", target, created=at, nonce=nonce)}

    thief = Delegated(token, keyid, ed25519.Ed25519PrivateKey.generate())
    p256 = Delegated(token, keyid, ec.generate_private_key(ec.SECP256R1()))
    human = Delegated(codec.issue(klass="human", subject="h", now=now, ttl=60), keyid, key)
    first = case(agent)
    out = verify(
        "delegation",
        [
            first,
            first,
            case(thief, nonce="n2"),
            case(agent, "https://api.example.com/other", nonce="n3"),
            {**case(agent, nonce="n4"), "now": now + 1000},
            case(human, nonce="n5"),
            case(p256, nonce="n7"),
            case(agent, nonce="n6") | {"headers": {"Authorization": f"PoP {token}"}},
        ],
        "--config",
        str(path),
    )
    assert out[0] == {
        "valid": True,
        "reason": "ok",
        "backed_by": "worldid:alice",
        "keyid": keyid,
        "scope": "/api",
        "expires": now + 300,
        "quota": 10,
    }
    assert [o["reason"] for o in out[1:]] == [
        "replayed",
        "bad_signature",
        "session_out_of_scope",
        "session_expired",
        "not_a_delegation",
        "bad_algorithm",
        "signature_required",
    ]
