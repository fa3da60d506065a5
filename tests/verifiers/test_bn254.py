"""BN254 fields, curves and the fast pairing, checked against py_ecc."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from py_ecc import bn128 as b
from py_ecc.fields import bn128_FQ12 as FQ12

from popgate.verifiers.bn254 import curve as c
from popgate.verifiers.bn254 import fields as f
from popgate.verifiers.bn254.pairing import final_exponentiation, line_schedule, miller_loop, pairing


def ref_g1(pt: c.G1Point) -> object:
    return b.FQ(pt[0]), b.FQ(pt[1])


def ref_g2(pt: c.G2Point) -> object:
    return b.FQ2(list(pt[0])), b.FQ2(list(pt[1]))


RNG = random.Random(1234)
scalars = st.integers(min_value=1, max_value=f.R - 1)


def rand12() -> tuple[int, ...]:
    return tuple(RNG.randrange(f.P) for _ in range(12))


def pe(x: tuple[int, ...]) -> FQ12:
    return FQ12(f.to_py_ecc_coeffs(x))


def cyclotomic(x: tuple[int, ...]) -> tuple[int, ...]:
    y = f.f12_mul(f.f12_conj(x), f.f12_inv(x))
    return f.f12_mul(f.f12_frob(y, 2), y)


def twist_point_off_subgroup(seed: int) -> c.G2Point:
    """A point on the twist curve that is not in the r-torsion (the twist has
    cofactor 2p - r, so a random point essentially never is)."""
    rng = random.Random(seed)
    while True:
        x = (rng.randrange(f.P), rng.randrange(f.P))
        y = c._fp2_sqrt_hint(c._g2_rhs(x), False) or c._fp2_sqrt_hint(c._g2_rhs(x), True)
        if y is not None:
            return x, y


def test_constants() -> None:
    """p, r and the generators are those of py_ecc's bn128."""
    assert b.field_modulus == f.P and b.curve_order == f.R
    assert ref_g1(c.G1_GEN) == b.G1 and ref_g2(c.G2_GEN) == b.G2
    assert c.g1_on_curve(c.G1_GEN) and c.g2_on_curve(c.G2_GEN)


@pytest.mark.parametrize("trial", range(3))
def test_fp12_arithmetic_matches_py_ecc(trial: int) -> None:
    """Product, square, inverse, Frobenius and conjugation agree with py_ecc's FQ12."""
    x, y = rand12(), rand12()
    assert pe(f.f12_mul(x, y)) == pe(x) * pe(y)
    assert pe(f.f12_sqr(x)) == pe(x) * pe(x)
    assert pe(f.f12_mul(x, f.f12_inv(x))) == FQ12.one()
    assert pe(f.f12_conj(x)) == pe(x) ** (f.P**6)
    for n in (1, 2, 3):
        assert pe(f.f12_frob(x, n)) == pe(x) ** (f.P**n)


def test_sparse_line_product_equals_full_product() -> None:
    """f12_mul_line is f12_mul with a (y, b, 0, c, 0, 0) element."""
    x = rand12()
    y, b0, b1 = RNG.randrange(f.P), (RNG.randrange(f.P), 5), (7, RNG.randrange(f.P))
    line = (y, 0, *b0, 0, 0, *b1, 0, 0, 0, 0)
    assert f.f12_mul_line(x, y, *b0, *b1) == f.f12_mul(x, line)


def test_cyclotomic_square_matches_square_on_the_subgroup() -> None:
    """Granger–Scott squaring equals plain squaring after the easy part."""
    x = cyclotomic(rand12())
    assert f.f12_cyc_sqr(x) == f.f12_sqr(x)
    assert f.f12_mul(x, f.f12_conj(x)) == f.F12_ONE  # conj is the inverse there


def test_final_exponentiation_matches_py_ecc() -> None:
    """The addition-chain hard part gives exactly f^((p¹²-1)/r), as py_ecc computes it."""
    x = rand12()
    assert pe(final_exponentiation(x)) == b.final_exponentiate(pe(x))


def test_pairing_matches_py_ecc() -> None:
    """e(P, Q) equals py_ecc's pairing on random multiples of the generators."""
    p = c.g1_mul(c.G1_GEN, RNG.randrange(1, f.R))
    q = c.g2_mul(c.G2_GEN, RNG.randrange(1, f.R))
    assert p is not None and q is not None
    assert pe(pairing(p, q)) == b.pairing(ref_g2(q), ref_g1(p))


def test_pairing_is_bilinear_and_multi_miller_loop_multiplies() -> None:
    """e(aP, bQ) = e(P, Q)^(ab); the shared Miller loop is a product of pairings."""
    a, k = RNG.randrange(1, f.R), RNG.randrange(1, f.R)
    pa, qk = c.g1_mul(c.G1_GEN, a), c.g2_mul(c.G2_GEN, k)
    assert pa is not None and qk is not None
    e1 = pairing(pa, qk)
    e2 = pairing(c.g1_mul(c.G1_GEN, a * k % f.R), c.G2_GEN)  # type: ignore[arg-type]
    assert e1 == e2
    both = final_exponentiation(miller_loop([(pa, line_schedule(qk)), (c.g1_neg(pa), line_schedule(qk))]))
    assert both == f.F12_ONE


def test_g2_subgroup_check_accepts_multiples_of_the_generator() -> None:
    """Points of order r pass the endomorphism test."""
    for k in (1, 2, RNG.randrange(f.R), f.R - 1):
        q = c.g2_mul(c.G2_GEN, k)
        assert q is not None and c.g2_in_subgroup(q)


@pytest.mark.parametrize("seed", range(4))
def test_g2_subgroup_check_rejects_twist_points_outside_it(seed: int) -> None:
    """Twist points with a cofactor component fail, as [r]Q ≠ O confirms; after
    clearing the cofactor (2p - r) they pass."""
    q = twist_point_off_subgroup(seed)
    assert c.g2_on_curve(q)
    assert not c.g2_in_subgroup(q)
    assert c.g2_mul(q, f.R) is not None
    cleared = c.g2_mul(q, 2 * f.P - f.R)
    assert cleared is not None and c.g2_in_subgroup(cleared)
    assert c.g2_mul(cleared, f.R) is None


def test_g1_checks() -> None:
    """Off-curve and unreduced coordinates are rejected."""
    x, y = c.G1_GEN
    assert not c.g1_on_curve((x, y + 1))
    assert not c.g1_on_curve((x + f.P, y))
    assert not c.g1_on_curve((x, y + f.P))


@settings(max_examples=25, deadline=None)
@given(scalars)
def test_g1_compression_round_trips(k: int) -> None:
    """g1_decompress(g1_compress(P)) == P, with the sign bit choosing ±y."""
    p = c.g1_mul(c.G1_GEN, k)
    enc = c.g1_compress(p)
    assert c.g1_decompress(enc) == p
    assert c.g1_decompress(enc ^ 1) == c.g1_neg(p)


@settings(max_examples=10, deadline=None)
@given(scalars)
def test_g2_compression_round_trips(k: int) -> None:
    """g2_decompress(g2_compress(Q)) == Q; flipping the sign bit gives -Q."""
    q = c.g2_mul(c.G2_GEN, k)
    c0, c1 = c.g2_compress(q)
    assert c.g2_decompress(c0, c1) == q
    assert q is not None and c.g2_decompress(c0 ^ 1, c1) == c.g2_neg(q)


def test_decompression_rejects_non_points() -> None:
    """x ≥ p, and x with no y on the curve, decode to no point; 0 is infinity."""
    assert c.g1_decompress(0) is None and c.g2_decompress(0, 0) is None
    assert c.g1_decompress(f.P << 1) is False
    assert c.g2_decompress(f.P << 2, 1) is False
    assert c.g2_decompress(4, f.P) is False
    no_point = next(x for x in range(1, 100) if f.fp_sqrt((x**3 + 3) % f.P) is None)
    assert c.g1_decompress(no_point << 1) is False


@given(st.integers(min_value=-(2**256), max_value=2**256))
@settings(max_examples=25, deadline=None)
def test_scalar_multiplication_by_any_integer_matches_py_ecc(k: int) -> None:
    """g1_mul and g2_mul take negative scalars as py_ecc does (k·P = -(|k|·P)); f2_pow
    takes negative exponents as inverse powers (was: g2_mul(Q, -1) == Q, f2_pow(x, -1) == x)."""
    g1, g2 = c.g1_mul(c.G1_GEN, k), c.g2_mul(c.G2_GEN, k)
    want1, want2 = b.multiply(b.G1, k % f.R), b.multiply(b.G2, k % f.R)
    assert (g1 is None and want1 is None) or ref_g1(g1) == want1  # type: ignore[arg-type]
    assert (g2 is None and want2 is None) or ref_g2(g2) == want2  # type: ignore[arg-type]
    x = (k % f.P or 1, (k * 7 + 3) % f.P)
    e = k % 1000 - 500
    got = f.f2_pow(x, e)
    want = b.FQ2(list(x)) ** abs(e)
    if e < 0:
        want = b.FQ2([1, 0]) / want
    assert b.FQ2(list(got)) == want
