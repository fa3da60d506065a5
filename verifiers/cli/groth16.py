"""``popgate verify groth16``: one Groth16/BN254 proof per case.

Case: ``{"vk": <snarkjs verification_key.json>, "proof": <snarkjs proof.json>
| {"packed": [8]} | {"compressed": [4]}, "public": [...]}`` (numbers as
decimal or 0x strings). Keys are prepared once per run (LRU in
:func:`verifiers.groth16.prepared_key`).
"""

from __future__ import annotations

from typing import Any

from popgate.verifiers.errors import Malformed
from popgate.verifiers.groth16 import parse_proof, parse_public, prepared_key, verify


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    """Return ``{"n_public": n}`` for a valid proof; raise VerificationError
    (``malformed``, ``invalid_key``, ``invalid_proof``) otherwise."""
    if not isinstance(case, dict):
        raise Malformed(detail="case: expected an object")
    try:
        vk, proof, public = case["vk"], case["proof"], case["public"]
    except KeyError as exc:
        raise Malformed(detail=f"case: missing {exc.args[0]}") from None
    key = prepared_key(vk)
    verify(key, parse_proof(proof), parse_public(public, key.n_public))
    return {"n_public": key.n_public}
