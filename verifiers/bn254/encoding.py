"""Parsing numbers and BN254 points from JSON (snarkjs conventions).

``parse_uint`` accepts an int, a decimal string or a 0x-hex string below
2²⁵⁶ (lengths capped before conversion); points are snarkjs projective lists
with z = 1 (or 0 for infinity). Shape errors raise
:class:`~verifiers.errors.Malformed`; a point that is at infinity, has a
coordinate ≥ p or lies off its curve raises the error class the caller
passes (invalid proof vs invalid key).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from popgate.verifiers.bn254.curve import G1Point, G2Point, g1_on_curve, g2_on_curve
from popgate.verifiers.bn254.fields import P
from popgate.verifiers.errors import Malformed, VerificationError

_DEC = re.compile(r"[0-9]{1,78}")
_HEX = re.compile(r"0[xX][0-9a-fA-F]{1,64}")


def parse_uint(value: Any, what: str = "value") -> int:
    """A uint256 from an int, a decimal string or a 0x-hex string; raises Malformed.

    Lengths are capped before conversion (no huge-number parsing on hostile input)."""
    if isinstance(value, bool):
        raise Malformed(detail=f"{what}: boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _DEC.fullmatch(value):
        n = int(value, 10)
    elif isinstance(value, str) and _HEX.fullmatch(value):
        n = int(value[2:], 16)
    else:
        raise Malformed(detail=f"{what}: not a decimal or 0x-hex integer")
    if not 0 <= n < 1 << 256:
        raise Malformed(detail=f"{what}: not a uint256")
    return n


def seq(obj: Any, n: int, what: str) -> Sequence[Any]:
    if not isinstance(obj, (list, tuple)) or len(obj) != n:
        raise Malformed(detail=f"{what}: expected a list of {n}")
    return obj


def g1_proj(obj: Any, what: str) -> tuple[int, int, int]:
    """snarkjs G1 ``[x, y]`` or ``[x, y, z]`` (z is 0 or 1)."""
    if not isinstance(obj, (list, tuple)) or len(obj) not in (2, 3):
        raise Malformed(detail=f"{what}: expected [x, y, z]")
    x, y = parse_uint(obj[0], what), parse_uint(obj[1], what)
    z = parse_uint(obj[2], what) if len(obj) == 3 else 1
    return x, y, z


def g2_proj(obj: Any, what: str) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    """snarkjs G2 ``[[x.c0, x.c1], [y.c0, y.c1], [z.c0, z.c1]]`` (z optional)."""
    if not isinstance(obj, (list, tuple)) or len(obj) not in (2, 3):
        raise Malformed(detail=f"{what}: expected [[x0, x1], [y0, y1], [z0, z1]]")
    parts = [(parse_uint(c0, what), parse_uint(c1, what)) for c0, c1 in (seq(e, 2, what) for e in obj)]
    z = parts[2] if len(parts) == 3 else (1, 0)
    return parts[0], parts[1], z


def affine_g1(pt: tuple[int, int, int], what: str, err: type[VerificationError]) -> G1Point:
    x, y, z = pt
    if z == 0:
        raise err(detail=f"{what} is the point at infinity")
    if z != 1:
        raise Malformed(detail=f"{what}: z must be 1 (normalized) or 0")
    if x >= P or y >= P:
        raise err(detail=f"{what}: coordinate not in the field")
    if not g1_on_curve((x, y)):
        raise err(detail=f"{what} is not on the curve")
    return x, y


def affine_g2(pt: Any, what: str, err: type[VerificationError]) -> G2Point:
    x, y, z = pt
    if z == (0, 0):
        raise err(detail=f"{what} is the point at infinity")
    if z != (1, 0):
        raise Malformed(detail=f"{what}: z must be [1, 0] (normalized) or [0, 0]")
    if max(x + y) >= P:
        raise err(detail=f"{what}: coordinate not in the field")
    if not g2_on_curve((x, y)):
        raise err(detail=f"{what} is not on the twist curve")
    return x, y
