"""What World App puts on the bridge for IDKit 4.x, and an IDKit 4.3 result built from it
by ``@worldcoin/idkit-core`` itself (tests/node/idkit4_bridge_result.mjs).

The plaintext shapes are the SDK's (``worldcoin/idkit`` ``rust/core/src/bridge.rs``
``BridgeResponse``, the protocol's ``ProofResponse``): a 4.0 answer is ``{id, version: 1,
responses: [{identifier, issuer_schema_id, proof: <160 bytes as lowercase hex>, nullifier:
"nil_<64 hex>", expires_at_min}]}``; a legacy one the IDKit 2 result ``{proof, merkle_root,
nullifier_hash, verification_level}``. The SDK decrypts it (AES-256-GCM, the key it put in its
connect URL) and returns the IDKitResult a page or dApp posts on.
"""

from __future__ import annotations

from typing import Any

from popgate.verifiers.worldid_rp import rp_message, sign
from tests.support.node import NODE_DIR, run_node

SCRIPT = NODE_DIR / "idkit4_bridge_result.mjs"
REQUEST_ID = "00000000-0000-4000-8000-000000000001"


def rp_context(
    key_hex: str, rp_id: str, nonce: str, created_at: int, action: str, ttl: int = 300
) -> dict[str, Any]:
    """An rp_context signed like ``signRequest`` of @worldcoin/idkit-server (a dApp backend's)."""
    n, expires = int(nonce, 16), created_at + ttl
    sig = sign(bytes.fromhex(key_hex), rp_message(n, created_at, expires, action))
    return {"rp_id": rp_id, "nonce": nonce, "created_at": created_at, "expires_at": expires, "signature": sig}


def v4_answer(item: dict[str, Any]) -> dict[str, Any]:
    """World App's bridge answer carrying one 4.0 uniqueness item (``item`` as IDKit returns it)."""
    return {
        "id": REQUEST_ID,
        "version": 1,
        "responses": [
            {
                "identifier": item["identifier"],
                "issuer_schema_id": item["issuer_schema_id"],
                "proof": "".join(f"{int(str(w), 0):064x}" for w in item["proof"]),
                "nullifier": f"nil_{int(item['nullifier'], 16):064x}",
                "expires_at_min": item["expires_at_min"],
            }
        ],
    }


def sdk_result(
    app_id: str,
    action: str,
    ctx: dict[str, Any],
    answer: dict[str, Any],
    preset: str = "proofOfHuman",
    signal: str | None = None,
) -> dict[str, Any]:
    """The IDKitResult @worldcoin/idkit-core 4.3.0 builds from ``answer``; raise on an SDK error."""
    payload = {"app_id": app_id, "action": action, "rp_context": ctx, "preset": preset, "answer": answer}
    if signal is not None:
        payload["signal"] = signal
    out: dict[str, Any] = run_node(SCRIPT, stdin=payload, timeout=60)
    if out["result"] is None:
        raise AssertionError(f"IDKit 4.3 did not build a result: {out['error']}")
    return dict(out["result"])
