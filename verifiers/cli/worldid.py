"""``popgate verify worldid``: World ID 3.x (Semaphore v3) and 4.0 proofs, offline.

Case: ``{"app_id", "action", "signal" (default ""), "result": <IDKit 2.x
result or 4.x v3 item>, "valid_roots": [...], "vk": <optional: a snarkjs key,
or a bundled key's name such as "semaphore_v3:16"; default: the World ID
production key (Semaphore v3, depth 30)>}``. A valid case outputs the nullifier
in canonical form; a nullifier seen before in this run (``env.spend``, one
store per run) for the same app and action is ``nullifier_reused``. The
check order is the gateway's (:func:`verifiers.worldid.check`).

A case with ``"chain"`` (or a result holding a 4.0 item) is checked as World ID
4.0 (:func:`verifiers.worldid_v4.check`): ``{"app_id", "action" (or
"action_hash": the action's field element), "signal" (absent/null: none),
"rp_id": "rp_<16 hex>", "nonce" (default: the result's), "result": <IDKit 4.x
result or v4 item>, "chain": {"valid_roots", "issuer_keys": {schema_id: [x, y]},
"oprf_keys": {rp_id: [x, y]}, "tree_depth"}, "now", "expiry_threshold"
(default 18000), "vk" (default: the 4.0 production key)}``. Output:
``{"nullifier", "merkle_root", "issuer_schema_id", "protocol_version": "4.0"}``; a
result that also holds a v3 item (IDKit 4 legacy) needs ``valid_roots`` (and
``v3_vk`` unless the v3 production key) and spends both nullifiers. Reasons:
``malformed``, ``credential_expired``, ``unknown_root``, ``unknown_issuer``,
``unknown_rp``, ``invalid_proof``, ``nullifier_reused``.
"""

from __future__ import annotations

from typing import Any

from popgate.verifiers.bn254.encoding import parse_uint
from popgate.verifiers.errors import Malformed
from popgate.verifiers.groth16 import prepared_key
from popgate.verifiers.worldid import default_key, key_spec, nullifier_scope, verify_result
from popgate.verifiers.worldid_v4 import (
    EXPIRY_THRESHOLD,
    Expect,
    LocalProofCheck,
    chain_from_json,
    is_v4_item,
    parse_rp_id,
)
from popgate.verifiers.worldid_v4 import check as check_v4
from popgate.verifiers.worldid_v4 import default_key as default_v4_key


def _items(result: Any) -> list[Any]:
    items = result.get("responses") if isinstance(result, dict) else None
    return items if isinstance(items, list) else [result]


def _expect_v4(case: dict[str, Any], result: Any, now: float) -> Expect:
    nonce = case.get("nonce", result.get("nonce") if isinstance(result, dict) else None)
    action, action_hash = case.get("action", ""), case.get("action_hash")
    signal = case.get("signal")
    if not isinstance(action, str) or (signal is not None and not isinstance(signal, str)):
        raise Malformed(detail="case: action and signal must be strings")
    threshold = case.get("expiry_threshold", EXPIRY_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise Malformed(detail="case: expiry_threshold must be a number")
    return Expect(
        rp_id=parse_rp_id(case.get("rp_id")),
        action=action,
        nonce=parse_uint(nonce, "nonce"),
        signal=signal,
        now=now,
        threshold=float(threshold),
        action_hash=None if action_hash is None else parse_uint(action_hash, "action_hash"),
    )


async def check_v4_case(case: dict[str, Any], env: Any) -> dict[str, Any]:
    """A World ID 4.0 case (module doc); spends every nullifier once per run."""
    result = case.get("result")
    v4_items = [i for i in _items(result) if is_v4_item(i)]
    if len(v4_items) != 1:
        raise Malformed(detail="case: expected exactly one 4.0 response item")
    expect = _expect_v4(case, result, float(env.now))
    vk = case.get("vk")
    proof_check = LocalProofCheck(default_v4_key() if vk is None else prepared_key(vk))
    app_id = case.get("app_id", "")
    if not isinstance(app_id, str):
        raise Malformed(detail="case: app_id must be a string")
    scope = (
        nullifier_scope(app_id, expect.action)
        if expect.action_hash is None
        else f"0x{expect.action_hash:064x}"
    )
    out = await check_v4(v4_items[0], expect, chain_from_json(case.get("chain")), proof_check, scope=scope)
    v3_items = [i for i in _items(result) if isinstance(i, dict) and "merkle_root" in i]
    if v3_items:
        v3_case = {**case, "result": v3_items[0], "chain": None, "vk": case.get("v3_vk")}
        await check({**v3_case, "signal": case.get("signal") or ""}, env)
    await env.spend(out.spend)
    return {
        "nullifier": out.nullifier,
        "merkle_root": out.merkle_root,
        "issuer_schema_id": out.issuer_schema_id,
        "protocol_version": "4.0",
    }


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    """Verify, then spend the nullifier once per (app_id, action).

    Raises VerificationError: ``malformed``, ``unknown_root`` (checked before
    the pairing), ``invalid_proof``, ``nullifier_reused``."""
    if not isinstance(case, dict):
        raise Malformed(detail="case: expected an object")
    if case.get("chain") is not None or any(is_v4_item(i) for i in _items(case.get("result"))):
        return await check_v4_case(case, env)
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
