"""The reference side of the BN254 differential tests: py_ecc, plus the
encodings written out from their specifications.

Nothing here imports popgate's arithmetic: points are converted to and from
``py_ecc.optimized_bn128`` with plain integers, compressed points are decoded
the way the gnark Solidity verifier (``decompress_g1`` / ``decompress_g2`` /
``sqrt_Fp2``) does, and the Groth16 check is py_ecc's Miller loops under one
final exponentiation.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Sequence
from typing import Any

from py_ecc import optimized_bn128 as ob
from py_ecc.fields import optimized_bn128_FQ as FQ
from py_ecc.fields import optimized_bn128_FQ2 as FQ2
from py_ecc.fields import optimized_bn128_FQ12 as FQ12

P: int = ob.field_modulus
R: int = ob.curve_order
#: The twist's cofactor 2p - r and its prime factors (the torsion a G2 check must catch).
H2 = 2 * P - R
H2_FACTORS = (10069, 5864401, 1875725156269, 197620364512881247228717050342013327560683201906968909)
assert functools.reduce(lambda a, b: a * b, H2_FACTORS) == H2

G1Aff = tuple[int, int]
G2Aff = tuple[tuple[int, int], tuple[int, int]]


# --- conversions ----------------------------------------------------------------


def ref1(pt: G1Aff | None) -> Any:
    return ob.Z1 if pt is None else (FQ(pt[0]), FQ(pt[1]), FQ.one())


def ref2(pt: G2Aff | None) -> Any:
    return ob.Z2 if pt is None else (FQ2(list(pt[0])), FQ2(list(pt[1])), FQ2.one())


def aff1(q: Any) -> G1Aff | None:
    if ob.is_inf(q):
        return None
    x, y = ob.normalize(q)
    return x.n % P, y.n % P


def aff2(q: Any) -> G2Aff | None:
    if ob.is_inf(q):
        return None
    x, y = ob.normalize(q)
    return (x.coeffs[0] % P, x.coeffs[1] % P), (y.coeffs[0] % P, y.coeffs[1] % P)


def fq2(x: tuple[int, int]) -> Any:
    return FQ2(list(x))


def fq12(coeffs: Sequence[int]) -> Any:
    return FQ12(list(coeffs))


# --- curve predicates -----------------------------------------------------------


def g1_valid(pt: G1Aff) -> bool:
    """Reduced coordinates on y² = x³ + 3 (G1 has cofactor 1)."""
    return all(0 <= v < P for v in pt) and bool(ob.is_on_curve(ref1(pt), ob.b))


def g2_on_twist(pt: G2Aff) -> bool:
    return all(0 <= v < P for v in (*pt[0], *pt[1])) and bool(ob.is_on_curve(ref2(pt), ob.b2))


def g2_valid(pt: G2Aff) -> bool:
    """On the twist and [r]Q = O."""
    return g2_on_twist(pt) and bool(ob.is_inf(ob.multiply(ref2(pt), R)))


# --- compressed encodings, as the gnark Solidity verifier decodes them ------------


def sqrt_fp(a: int) -> int | None:
    x = pow(a, (P + 1) // 4, P)
    return x if x * x % P == a % P else None


def sqrt_fp2(a0: int, a1: int, hint: bool) -> tuple[int, int] | None:
    d = sqrt_fp((a0 * a0 + a1 * a1) % P)
    if d is None:
        return None
    if hint:
        d = (P - d) % P
    x0 = sqrt_fp((a0 + d) * pow(2, -1, P) % P)
    if x0 is None or x0 == 0:  # invert_Fp(0) reverts
        return None
    x1 = a1 * pow(2 * x0, -1, P) % P
    if a0 != (x0 * x0 - x1 * x1) % P or a1 != 2 * x0 * x1 % P:
        return None
    return x0, x1


def g1_decompress(c: int) -> G1Aff | bool | None:
    """None for infinity (c = 0), False for no point."""
    if c == 0:
        return None
    x = c >> 1
    if x >= P:
        return False
    y = sqrt_fp((x**3 + 3) % P)
    if y is None:
        return False
    return (x, (P - y) % P) if c & 1 else (x, y)


def g2_decompress(c0: int, c1: int) -> G2Aff | bool | None:
    """``c0 = x.c0 << 2 | hint << 1 | sign``, ``c1 = x.c1``; None for (0, 0)."""
    if c0 == 0 and c1 == 0:
        return None
    x0, x1 = c0 >> 2, c1
    if x0 >= P or x1 >= P:
        return False
    a = fq2((x0, x1)) ** 3 + ob.b2
    y = sqrt_fp2(a.coeffs[0] % P, a.coeffs[1] % P, bool(c0 & 2))
    if y is None:
        return False
    if c0 & 1:
        y = ((P - y[0]) % P, (P - y[1]) % P)
    return (x0, x1), y


# --- G2 points outside the subgroup ------------------------------------------------


def twist_point(seed: int) -> G2Aff:
    """A pseudo-random point on the twist (almost surely not of order r)."""
    rng = random.Random(seed)
    while True:
        x = (rng.randrange(P), rng.randrange(P))
        a = fq2(x) ** 3 + ob.b2
        for hint in (False, True):
            y = sqrt_fp2(a.coeffs[0] % P, a.coeffs[1] % P, hint)
            if y is not None:
                return x, y


@functools.cache
def torsion(d: int) -> G2Aff:
    """A twist point of prime order ``d`` (d a factor of the cofactor)."""
    t = ob.multiply(ref2(twist_point(d)), R * H2 // d)
    assert not ob.is_inf(t) and ob.is_inf(ob.multiply(t, d))
    pt = aff2(t)
    assert pt is not None
    return pt


# --- Groth16 ----------------------------------------------------------------------


class Key:
    """A Groth16 key as py_ecc points, with the e(β, -α) Miller value cached."""

    def __init__(self, alpha: G1Aff, beta: G2Aff, gamma: G2Aff, delta: G2Aff, ic: Sequence[G1Aff]) -> None:
        self.gamma, self.delta = ref2(gamma), ref2(delta)
        self.ic = [ref1(p) for p in ic]
        self.ml_alpha_beta = ob.pairing(ref2(beta), ob.neg(ref1(alpha)), final_exponentiate=False)


def groth16(key: Key, a: G1Aff | None, b: G2Aff | None, c: G1Aff | None, public: Sequence[int]) -> str:
    """``ok``, or why a proof given as affine integer points (None: infinity,
    which a proof may not use) must be refused: ``count`` (wrong number of
    inputs: Malformed), ``input>=r``, ``infinity``, ``not on curve``,
    ``B not in G2`` or ``pairing`` (all InvalidProof)."""
    if len(public) != len(key.ic) - 1:
        return "count"
    if any(not 0 <= x < R for x in public):
        return "input>=r"
    if a is None or b is None or c is None:
        return "infinity"
    if not (g1_valid(a) and g1_valid(c) and g2_on_twist(b)):
        return "not on curve"
    if not g2_valid(b):
        return "B not in G2"
    acc = key.ic[0]
    for x, ic in zip(public, key.ic[1:]):
        acc = ob.add(acc, ob.multiply(ic, x))
    f = ob.pairing(ref2(b), ref1(a), final_exponentiate=False) * key.ml_alpha_beta
    f = f * ob.pairing(key.gamma, ob.neg(acc), final_exponentiate=False)
    f = f * ob.pairing(key.delta, ob.neg(ref1(c)), final_exponentiate=False)
    return "ok" if ob.final_exponentiate(f) == FQ12.one() else "pairing"
