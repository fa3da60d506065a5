"""BN254 groups: G1 (y² = x³ + 3 over Fp) and G2 on the twist y² = x³ + 3/ξ over Fp2.

Points are affine tuples ``(x, y)`` (G1: ints, G2: Fp2 pairs); ``None`` is
the point at infinity. Jacobian coordinates are used inside scalar
multiplications only. Also: the G2 subgroup test, fixed-base windowed tables
for multi-scalar multiplication with fixed points, and the point compression
used by gnark / World ID / Semaphore v4 (x with sign bits, see
:func:`g1_decompress`, :func:`g2_decompress`).

Nothing here raises on bad input except where documented: predicates return
bool, decompression returns None when no point exists.
"""

from __future__ import annotations

from typing import overload

from popgate.verifiers.bn254.fields import (
    _FROB,
    FP2_ONE,
    FP2_ZERO,
    XI,
    Fp2,
    P,
    U,
    f2_add,
    f2_conj,
    f2_inv,
    f2_mul,
    f2_neg,
    f2_scale,
    f2_sqr,
    f2_sub,
    fp_is_square,
    fp_sqrt,
)

G1Point = tuple[int, int]
G2Point = tuple[Fp2, Fp2]

B2: Fp2 = f2_mul((3, 0), f2_inv(XI))
G1_GEN: G1Point = (1, 2)
G2_GEN: G2Point = (
    (
        10857046999023057135944570762232829481370756359578518086990519993285655852781,
        11559732032986387107991004021392285783925812861821192530917403151452391805634,
    ),
    (
        8495653923123431417604973247489272438418190587263600148770280649306958101930,
        4082367875863433681332203403145435568316851327593401208105741076214120093531,
    ),
)
_PSI_X = _FROB[1][2]  # ξ^((p-1)/3)
_PSI_Y = _FROB[1][3]  # ξ^((p-1)/2)


# --- G1 ---------------------------------------------------------------------


def g1_on_curve(pt: G1Point) -> bool:
    """True if ``pt`` has reduced coordinates and lies on y² = x³ + 3.

    G1 has cofactor 1, so this is also the subgroup test."""
    x, y = pt
    return 0 <= x < P and 0 <= y < P and (y * y - x * x * x - 3) % P == 0


@overload
def g1_neg(pt: G1Point) -> G1Point: ...
@overload
def g1_neg(pt: None) -> None: ...
@overload
def g1_neg(pt: G1Point | None) -> G1Point | None: ...
def g1_neg(pt: G1Point | None) -> G1Point | None:
    return None if pt is None else (pt[0], -pt[1] % P)


def _j1_dbl(X: int, Y: int, Z: int) -> tuple[int, int, int]:
    A = X * X % P
    B = Y * Y % P
    C = B * B % P
    D = 2 * ((X + B) ** 2 - A - C) % P
    E = 3 * A
    X3 = (E * E - 2 * D) % P
    return X3, (E * (D - X3) - 8 * C) % P, 2 * Y * Z % P


def _j1_add_affine(X1: int, Y1: int, Z1: int, x2: int, y2: int) -> tuple[int, int, int]:
    """Jacobian + affine (madd-2007-bl); Z1 == 0 encodes infinity."""
    if Z1 == 0:
        return x2, y2, 1
    Z1Z1 = Z1 * Z1 % P
    H = (x2 * Z1Z1 - X1) % P
    rr = 2 * (y2 * Z1 * Z1Z1 - Y1) % P
    if H == 0:
        return _j1_dbl(X1, Y1, Z1) if rr == 0 else (1, 1, 0)
    HH = H * H % P
    I = 4 * HH  # noqa: E741 - the names of the EFD formula
    J = H * I % P
    V = X1 * I % P
    X3 = (rr * rr - J - 2 * V) % P
    return X3, (rr * (V - X3) - 2 * Y1 * J) % P, ((Z1 + H) ** 2 - Z1Z1 - HH) % P


def _j1_affine(X: int, Y: int, Z: int) -> G1Point | None:
    if Z == 0:
        return None
    zi = pow(Z, -1, P)
    zi2 = zi * zi % P
    return X * zi2 % P, Y * zi2 * zi % P


def g1_add(a: G1Point | None, b: G1Point | None) -> G1Point | None:
    if a is None:
        return b
    if b is None:
        return a
    return _j1_affine(*_j1_add_affine(a[0], a[1], 1, b[0], b[1]))


def g1_mul(pt: G1Point | None, k: int) -> G1Point | None:
    """``k·pt`` by double-and-add (set-up and tests only: not constant time)."""
    if pt is None or k == 0:
        return None
    if k < 0:
        pt, k = g1_neg(pt), -k
    X, Y, Z = 1, 1, 0
    for bit in bin(k)[2:]:
        if Z:
            X, Y, Z = _j1_dbl(X, Y, Z)
        if bit == "1":
            X, Y, Z = _j1_add_affine(X, Y, Z, pt[0], pt[1])
    return _j1_affine(X, Y, Z)


WINDOW = 6
_NWIN = -(-256 // WINDOW)


def g1_fixed_table(pt: G1Point) -> list[list[G1Point | None]]:
    """Table ``t[j][d] = d·2^(WINDOW·j)·pt`` (d < 2^WINDOW) for :func:`g1_msm_fixed`.

    About 2,800 affine points per base (one inversion each): built once per key."""
    table = []
    base: G1Point | None = pt
    for _ in range(_NWIN):
        row: list[G1Point | None] = [None]
        acc: G1Point | None = None
        for _d in range(1, 1 << WINDOW):
            acc = g1_add(acc, base)
            row.append(acc)
        table.append(row)
        base = g1_add(acc, base)  # 2^WINDOW · base
    return table


def g1_msm_fixed(
    start: G1Point | None, tables: list[list[list[G1Point | None]]], scalars: list[int]
) -> G1Point | None:
    """``start + Σ scalars[i]·base_i`` with the bases' tables; scalars in [0, 2^256)."""
    X, Y, Z = (start[0], start[1], 1) if start is not None else (1, 1, 0)
    mask = (1 << WINDOW) - 1
    for table, k in zip(tables, scalars):
        j = 0
        while k:
            d = k & mask
            if d:
                q = table[j][d]
                if q is not None:
                    X, Y, Z = _j1_add_affine(X, Y, Z, q[0], q[1])
            k >>= WINDOW
            j += 1
    return _j1_affine(X, Y, Z)


# --- G2 ---------------------------------------------------------------------


def g2_on_curve(pt: G2Point) -> bool:
    """True if coordinates are reduced and ``pt`` lies on the twist (not the subgroup test)."""
    (x0, x1), (y0, y1) = pt
    if not all(0 <= c < P for c in (x0, x1, y0, y1)):
        return False
    x, y = pt
    return f2_sqr(y) == f2_add(f2_mul(f2_sqr(x), x), B2)


def g2_neg(pt: G2Point) -> G2Point:
    return pt[0], f2_neg(pt[1])


_J2 = tuple[Fp2, Fp2, Fp2]
_J2_INF: _J2 = (FP2_ONE, FP2_ONE, FP2_ZERO)


def _j2_dbl(p: _J2) -> _J2:
    X, Y, Z = p
    if Z == FP2_ZERO:
        return p
    A = f2_sqr(X)
    B = f2_sqr(Y)
    C = f2_sqr(B)
    D = f2_scale(f2_sub(f2_sub(f2_sqr(f2_add(X, B)), A), C), 2)
    E = f2_scale(A, 3)
    X3 = f2_sub(f2_sqr(E), f2_scale(D, 2))
    Y3 = f2_sub(f2_mul(E, f2_sub(D, X3)), f2_scale(C, 8))
    return X3, Y3, f2_scale(f2_mul(Y, Z), 2)


def _j2_add(p: _J2, q: _J2) -> _J2:
    X1, Y1, Z1 = p
    X2, Y2, Z2 = q
    if Z1 == FP2_ZERO:
        return q
    if Z2 == FP2_ZERO:
        return p
    Z1Z1, Z2Z2 = f2_sqr(Z1), f2_sqr(Z2)
    U1, U2 = f2_mul(X1, Z2Z2), f2_mul(X2, Z1Z1)
    S1 = f2_mul(f2_mul(Y1, Z2), Z2Z2)
    S2 = f2_mul(f2_mul(Y2, Z1), Z1Z1)
    H = f2_sub(U2, U1)
    rr = f2_scale(f2_sub(S2, S1), 2)
    if H == FP2_ZERO:
        return _j2_dbl(p) if rr == FP2_ZERO else _J2_INF
    I = f2_sqr(f2_scale(H, 2))  # noqa: E741 - the names of the EFD formula
    J = f2_mul(H, I)
    V = f2_mul(U1, I)
    X3 = f2_sub(f2_sub(f2_sqr(rr), J), f2_scale(V, 2))
    Y3 = f2_sub(f2_mul(rr, f2_sub(V, X3)), f2_scale(f2_mul(S1, J), 2))
    Z3 = f2_mul(f2_sub(f2_sub(f2_sqr(f2_add(Z1, Z2)), Z1Z1), Z2Z2), H)
    return X3, Y3, Z3


def _j2_affine(p: _J2) -> G2Point | None:
    X, Y, Z = p
    if Z == FP2_ZERO:
        return None
    zi = f2_inv(Z)
    zi2 = f2_sqr(zi)
    return f2_mul(X, zi2), f2_mul(f2_mul(Y, zi2), zi)


def _j2_mul(pt: G2Point, k: int) -> _J2:
    acc = _J2_INF
    base: _J2 = (pt[0], pt[1], FP2_ONE)
    for bit in bin(k)[2:]:
        acc = _j2_dbl(acc)
        if bit == "1":
            acc = _j2_add(acc, base)
    return acc


def g2_mul(pt: G2Point | None, k: int) -> G2Point | None:
    """``k·pt`` for any integer k (set-up and tests only: not constant time)."""
    if pt is None:
        return None
    if k < 0:
        pt, k = g2_neg(pt), -k
    return _j2_affine(_j2_mul(pt, k))


def _psi_j(p: _J2) -> _J2:
    X, Y, Z = p
    return f2_mul(f2_conj(X), _PSI_X), f2_mul(f2_conj(Y), _PSI_Y), f2_conj(Z)


def g2_psi(pt: G2Point) -> G2Point:
    """The untwist-Frobenius-twist endomorphism ψ (acts as pᵗʰ power on G2)."""
    return f2_mul(f2_conj(pt[0]), _PSI_X), f2_mul(f2_conj(pt[1]), _PSI_Y)


def g2_in_subgroup(pt: G2Point) -> bool:
    """r-torsion test for a point already on the twist.

    Uses [u+1]Q + ψ([u]Q) + ψ²([u]Q) = ψ³([2u]Q) (Housni–Guillevic–Piellard,
    eprint 2022/348; valid for BN254 since u ≢ 4 mod 13 and u ≢ 92 mod 97):
    one 63-bit multiplication instead of a 254-bit one.
    """
    uq = _j2_mul(pt, U)
    lhs = _j2_add(_j2_add(_j2_add(uq, (pt[0], pt[1], FP2_ONE)), _psi_j(uq)), _psi_j(_psi_j(uq)))
    rhs = _psi_j(_psi_j(_psi_j(_j2_dbl(uq))))
    return _j2_affine(lhs) == _j2_affine(rhs)


# --- compression (gnark / World ID / Semaphore v4 style) ----------------------


def g1_decompress(c: int) -> G1Point | bool | None:
    """Decode ``x << 1 | sign``; 0 is infinity (None). Returns False when ``c``
    encodes no point (x ≥ p or x³ + 3 not a square). y is ``√(x³+3)`` taken as
    ``a^((p+1)/4)``, negated when the sign bit is set."""
    if c == 0:
        return None
    x = c >> 1
    if x >= P:
        return False
    y = fp_sqrt((x * x * x + 3) % P)
    if y is None:
        return False
    return (x, -y % P) if c & 1 else (x, y)


def g1_compress(pt: G1Point | None) -> int:
    if pt is None:
        return 0
    x, y = pt
    return (x << 1) | (0 if fp_sqrt((x * x * x + 3) % P) == y else 1)


_HALF = pow(2, -1, P)


def _g2_rhs(x: Fp2) -> Fp2:
    return f2_add(f2_mul(f2_sqr(x), x), B2)


def _fp2_sqrt_hint(a: Fp2, hint: bool) -> Fp2 | None:
    a0, a1 = a
    d = fp_sqrt((a0 * a0 + a1 * a1) % P)
    if d is None:
        return None
    if hint:
        d = -d % P
    x0 = fp_sqrt((a0 + d) * _HALF % P)
    if x0 is None or x0 == 0:
        return None
    x1 = a1 * pow(2 * x0, -1, P) % P
    return (x0, x1) if f2_sqr((x0, x1)) == (a0 % P, a1 % P) else None


def g2_decompress(c0: int, c1: int) -> G2Point | bool | None:
    """Decode ``(x.c0 << 2 | hint << 1 | sign, x.c1)``; (0, 0) is infinity (None).
    Returns False when no point is encoded (x ≥ p, or no square root)."""
    if c0 == 0 and c1 == 0:
        return None
    x = (c0 >> 2, c1)
    if x[0] >= P or x[1] >= P:
        return False
    y = _fp2_sqrt_hint(_g2_rhs(x), bool(c0 & 2))
    if y is None:
        return False
    return (x, f2_neg(y)) if c0 & 1 else (x, y)


def g2_compress(pt: G2Point | None) -> tuple[int, int]:
    if pt is None:
        return 0, 0
    x, y = pt
    a = _g2_rhs(x)
    d = fp_sqrt((a[0] * a[0] + a[1] * a[1]) % P)
    hint = d is not None and not fp_is_square((a[0] + d) * _HALF % P)
    root = _fp2_sqrt_hint(a, hint)
    if root is None:
        raise ValueError("point not on the twist")
    sign = 0 if root == y else 1
    return (x[0] << 2) | (int(hint) << 1) | sign, x[1]
