"""Fast optimal-ate pairing products on BN254, on plain integers.

The Groth16 check needs ``Π e(Pᵢ, Qᵢ) == e(α, β)`` for three pairs, two of
whose G2 points (γ, δ) are fixed per key. So:

* the Miller loop runs once for all pairs (shared squarings of f);
* every G2 point is first turned into a *line schedule*: per loop step the
  slope λ and constant c = λ·x_T - y_T of the line through the running point
  T, in affine coordinates. For γ and δ this is done once per key
  (:func:`line_schedule`); for the proof's B once per proof;
* a line evaluated at P = (x, y) is ``y + (-λ·x)·w + c·w³``; divided by y
  (an Fp factor the final exponentiation removes) it is ``1 + b·w + c'·w³``,
  multiplied in by the sparse :func:`~.fields.f12_mul_line1`;
* one final exponentiation: the easy part, then the hard part
  (p⁴ - p² + 1)/r by the Scott et al. addition chain; the three
  exponentiations by u use cyclotomic squarings and a width-4 NAF.
"""

from __future__ import annotations

from popgate.verifiers.bn254.curve import G1Point, G2Point, g2_neg, g2_psi
from popgate.verifiers.bn254.fields import (
    F12_ONE,
    Fp12,
    P,
    U,
    f12_conj,
    f12_cyc_sqr,
    f12_frob,
    f12_inv,
    f12_mul,
    f12_mul_line1,
    f12_sqr,
)

ATE = 6 * U + 2


def _naf(k: int) -> list[int]:
    """Non-adjacent form, most significant digit first."""
    out = []
    while k:
        if k & 1:
            d = 2 - (k & 3)
            k -= d
        else:
            d = 0
        out.append(d)
        k >>= 1
    return out[::-1]


_ATE_NAF = _naf(ATE)
#: The fixed sequence of Miller loop steps: (doubling?, digit); digit ±1 adds ±Q.
#: Two final additions of π(Q) and -π²(Q) are marked with digits 2 and 3.
STEPS: list[tuple[bool, int]] = []
for _d in _ATE_NAF[1:]:
    STEPS.append((True, 0))
    if _d:
        STEPS.append((False, _d))
STEPS += [(False, 2), (False, 3)]

Line = tuple[int, int, int, int]  # λ.a, λ.b, c.a, c.b


def line_schedule(q: G2Point) -> list[Line]:
    """The lines of the Miller loop for ``q`` (on the twist, in G2, not infinity),
    one per entry of :data:`STEPS`. Raises ValueError on a degenerate step
    (impossible for points of order r). Affine, Fp2 arithmetic inlined."""
    lines: list[Line] = []
    (x0, x1), (y0, y1) = q
    neg_q = g2_neg(q)
    q1 = g2_psi(q)
    others = {1: q, -1: neg_q, 2: q1, 3: g2_neg(g2_psi(q1))}
    for dbl, digit in STEPS:
        if dbl:
            # λ = 3x² / 2y
            d = 4 * (y0 * y0 + y1 * y1) % P
            if d == 0:
                raise ValueError("degenerate doubling")
            t = pow(d, -1, P)
            i0, i1 = 2 * y0 * t % P, -2 * y1 * t % P
            n0, n1 = 3 * (x0 + x1) * (x0 - x1) % P, 6 * x0 * x1 % P
        else:
            (ox0, ox1), (oy0, oy1) = others[digit]
            # λ = (y_o - y) / (x_o - x)
            d0, d1 = (ox0 - x0) % P, (ox1 - x1) % P
            d = (d0 * d0 + d1 * d1) % P
            if d == 0:
                raise ValueError("degenerate addition")
            t = pow(d, -1, P)
            i0, i1 = d0 * t % P, -d1 * t % P
            n0, n1 = oy0 - y0, oy1 - y1
        l0, l1 = (n0 * i0 - n1 * i1) % P, (n0 * i1 + n1 * i0) % P
        lines.append((l0, l1, (l0 * x0 - l1 * x1 - y0) % P, (l0 * x1 + l1 * x0 - y1) % P))
        if digit == 3:
            break  # the last point is never used
        # x3 = λ² - x - x_other (x_other = x when doubling); y3 = λ(x - x3) - y
        s0, s1 = (l0 + l1) * (l0 - l1), 2 * l0 * l1
        if dbl:
            x30, x31 = (s0 - 2 * x0) % P, (s1 - 2 * x1) % P
        else:
            x30, x31 = (s0 - x0 - ox0) % P, (s1 - x1 - ox1) % P
        e0, e1 = x0 - x30, x1 - x31
        y0, y1 = (l0 * e0 - l1 * e1 - y0) % P, (l0 * e1 + l1 * e0 - y1) % P
        x0, x1 = x30, x31
    return lines


def miller_loop(pairs: list[tuple[G1Point, list[Line]]]) -> Fp12:
    """Product of the Miller functions of ``(P, schedule(Q))`` pairs (P affine, not infinity).

    Each line ``y + (-λx)·w + c·w³`` is divided by y (an Fp factor, which the
    final exponentiation removes) so the sparse product has a constant 1."""
    evals = []
    for (px, py), lines in pairs:
        yi = pow(py, -1, P)
        evals.append((-px * yi % P, yi, lines))
    f = F12_ONE
    for idx, (dbl, _d) in enumerate(STEPS):
        if dbl and idx:
            f = f12_sqr(f)
        for xy, yi, lines in evals:
            la, lb, ca, cb = lines[idx]
            f = f12_mul_line1(f, la * xy % P, lb * xy % P, ca * yi % P, cb * yi % P)
    return f


def _wnaf(k: int, w: int) -> list[int]:
    """Width-w NAF (odd digits |d| < 2^(w-1)), most significant first."""
    out = []
    while k > 0:
        if k & 1:
            d = k & ((1 << w) - 1)
            if d >= 1 << (w - 1):
                d -= 1 << w
            k -= d
        else:
            d = 0
        out.append(d)
        k >>= 1
    return out[::-1]


_U_WNAF = _wnaf(U, 4)  # 14 nonzero digits in 63


def _cyc_exp_u(f: Fp12) -> Fp12:
    """``f^u`` in the cyclotomic subgroup: width-4 NAF, inverse = conjugate."""
    f2 = f12_cyc_sqr(f)
    odd = {1: f}
    for d in (3, 5, 7):
        odd[d] = f12_mul(odd[d - 2], f2)
    table = {**odd, **{-d: f12_conj(v) for d, v in odd.items()}}
    acc = table[_U_WNAF[0]]
    for d in _U_WNAF[1:]:
        acc = f12_cyc_sqr(acc)
        if d:
            acc = f12_mul(acc, table[d])
    return acc


def final_exponentiation(f: Fp12) -> Fp12:
    """``f^((p¹²-1)/r)``; raises ValueError if f is 0."""
    f = f12_mul(f12_conj(f), f12_inv(f))  # f^(p⁶-1)
    f = f12_mul(f12_frob(f, 2), f)  # ^(p²+1): now cyclotomic
    a = _cyc_exp_u(f)
    b = _cyc_exp_u(a)
    c = _cyc_exp_u(b)
    y0 = f12_mul(f12_mul(f12_frob(f, 1), f12_frob(f, 2)), f12_frob(f, 3))
    y1 = f12_conj(f)
    y2 = f12_frob(b, 2)
    y3 = f12_conj(f12_frob(a, 1))
    y4 = f12_conj(f12_mul(a, f12_frob(b, 1)))
    y5 = f12_conj(b)
    y6 = f12_conj(f12_mul(c, f12_frob(c, 1)))
    t0 = f12_mul(f12_mul(f12_cyc_sqr(y6), y4), y5)
    t1 = f12_mul(f12_mul(y3, y5), t0)
    t0 = f12_mul(t0, y2)
    t1 = f12_cyc_sqr(f12_mul(f12_cyc_sqr(t1), t0))
    t0 = f12_cyc_sqr(f12_mul(t1, y1))
    t1 = f12_mul(t1, y0)
    return f12_mul(t0, t1)


def pairing(p: G1Point, q: G2Point) -> Fp12:
    """e(p, q) for single points (set-up and tests)."""
    return final_exponentiation(miller_loop([(p, line_schedule(q))]))
