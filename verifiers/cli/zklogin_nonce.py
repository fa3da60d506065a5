"""``popgate verify zklogin-nonce``: ``{"ext_eph_pk": base64(flag||pk), "max_epoch",
"randomness"}`` (decimal strings) -> ``nonce`` as @mysten/sui ``generateNonce``."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from popgate.verifiers.errors import Malformed
from popgate.verifiers.zklogin import compute_nonce, parse_ext_eph_pk


def decimal(x: Any) -> int:
    """A decimal string (or a JSON integer); raises Malformed."""
    if isinstance(x, int) and not isinstance(x, bool):
        return x
    if not isinstance(x, str) or not x.isdigit() or len(x) > 78:
        raise Malformed(detail="expected a decimal string")
    return int(x)


def ext_key(x: Any) -> bytes:
    """Standard base64 of flag||pk, parsed (raises Malformed)."""
    if not isinstance(x, str):
        raise Malformed(detail="ext_eph_pk must be base64")
    try:
        raw = base64.b64decode(x, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Malformed(detail="ext_eph_pk is not base64") from exc
    return parse_ext_eph_pk(raw).extended


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    try:
        nonce = compute_nonce(
            ext_key(case["ext_eph_pk"]), decimal(case["max_epoch"]), decimal(case["randomness"])
        )
    except ValueError as exc:
        raise Malformed(detail=str(exc)) from exc
    return {"nonce": nonce}
