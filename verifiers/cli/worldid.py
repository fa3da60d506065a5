"""``popgate verify worldid``: World ID 3.x (Semaphore v3) proofs.

Case: ``{"app_id", "action", "signal" (default ""), "result": <IDKit 2.x
result or 4.x v3 item>, "valid_roots": [...], "vk": <optional: a snarkjs key,
or a bundled key's name such as "semaphore_v3:16"; default: the World ID
production key (Semaphore v3, depth 30)>}``. A valid case outputs the nullifier
in canonical form; a nullifier seen before in this run (``env.spend``, one
store per run) for the same app and action is ``nullifier_reused``. The
check order is the gateway's (:func:`verifiers.worldid.check`).
"""

from __future__ import annotations

from typing import Any

from popgate.verifiers.bn254.encoding import parse_uint
from popgate.verifiers.errors import Malformed
from popgate.verifiers.groth16 import prepared_key
from popgate.verifiers.worldid import default_key, key_spec, verify_result


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    """Verify, then spend the nullifier once per (app_id, action).

    Raises VerificationError: ``malformed``, ``unknown_root`` (checked before
    the pairing), ``invalid_proof``, ``nullifier_reused``."""
    if not isinstance(case, dict):
        raise Malformed(detail="case: expected an object")
    app_id, action = case.get("app_id"), case.get("action")
    signal = case.get("signal", "")
    if not isinstance(app_id, str) or not isinstance(action, str):
        raise Malformed(detail="case: app_id and action must be strings")
    if signal is not None and not isinstance(signal, str):
        raise Malformed(detail="case: signal must be a string")
    roots_raw = case.get("valid_roots")
    if not isinstance(roots_raw, list):
        raise Malformed(detail="case: valid_roots must be a list")
    roots = {parse_uint(r, "valid_roots") for r in roots_raw}
    if "result" not in case:
        raise Malformed(detail="case: missing result")
    vk = case.get("vk")
    key = default_key() if vk is None else prepared_key(key_spec(vk) if isinstance(vk, str) else vk)
    verified = await verify_result(
        key, case["result"], app_id=app_id, action=action, signal=signal, valid_roots=roots
    )
    await env.spend(verified.spend)
    return {
        "nullifier": verified.nullifier,
        "merkle_root": verified.merkle_root,
        "verification_level": verified.verification_level,
    }
