"""``popgate verify poseidon``: ``{"inputs": [decimal strings]}`` -> ``hash`` (decimal)."""

from __future__ import annotations

from typing import Any

from popgate.verifiers.errors import Malformed
from popgate.verifiers.poseidon import poseidon_hash


def _field(x: Any) -> int:
    if not isinstance(x, str) or not x.isdigit() or len(x) > 78:
        raise Malformed(detail="inputs must be decimal strings")
    return int(x)


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    inputs = case["inputs"]
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= 256:
        raise Malformed(detail="inputs must be a list of 1..256 decimal strings")
    try:
        return {"hash": str(poseidon_hash([_field(x) for x in inputs]))}
    except ValueError as exc:
        raise Malformed(detail=str(exc)) from exc
