"""Differential fuzzing of popgate's BN254 / Groth16 code against py_ecc.

Fields, G1 and the G2 twist (including twist points outside the r-torsion),
point encodings, the pairing, and the whole Groth16 verifier on mutated real
proofs, each compared with an oracle in :mod:`tests.verifiers.bn254_oracle`
(py_ecc ``optimized_bn128`` and the encodings written from their specs).

The CI profile runs few examples where py_ecc pairings are involved (~0.5 s
each). The deep run::

    HYPOTHESIS_PROFILE=deep .venv/bin/pytest -q tests/verifiers/test_bn254_differential.py

runs the second number of each test's ``@budget(ci, deep)``: about 47,000
examples in 6-8 minutes on two busy cores, 400 of them mutated Groth16 proofs
(``--hypothesis-show-statistics`` shows why the oracle refused each). Failing
examples are kept in ``.hypothesis/`` and replayed first.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from popgate.verifiers.bn254 import curve as c
from popgate.verifiers.bn254 import fields as f
from popgate.verifiers.bn254 import pairing as pg
from popgate.verifiers.bn254.encoding import affine_g1, affine_g2, g1_proj, g2_proj
from popgate.verifiers.errors import Malformed
from popgate.verifiers.groth16 import (
    InvalidProof,
    parse_proof,
    parse_public,
    parse_vk,
    prepared_key,
    verify_job,
)
from tests.verifiers import bn254_oracle as o
from tests.verifiers.test_groth16 import CASES

P, R = f.P, f.R
DEEP = os.environ.get("HYPOTHESIS_PROFILE") == "deep"
#: The suite's 180 s per-test timeout would cut the deep run's longest tests short.
pytestmark = [pytest.mark.timeout(1800)] if DEEP else []


def budget(ci: int, deep: int) -> Any:
    """Examples for one test: ``ci`` normally, ``deep`` under HYPOTHESIS_PROFILE=deep."""
    return settings(max_examples=deep if DEEP else ci)


# --- strategies ---------------------------------------------------------------------

SPECIAL_FP = [0, 1, 2, 3, P - 1, P - 2, (P - 1) // 2, (P + 1) // 2]
fp = st.one_of(st.sampled_from(SPECIAL_FP), st.integers(0, P - 1))
fp2 = st.tuples(fp, fp)
fp12 = st.one_of(st.sampled_from([f.F12_ONE, (0,) * 12, (P - 1,) + (0,) * 11]), st.tuples(*[fp] * 12))
SPECIAL_K = [0, 1, 2, R - 1, R, R + 1, 2 * R, P, P - 1, (1 << 256) - 1]
scalar = st.one_of(st.sampled_from(SPECIAL_K), st.integers(0, R - 1), st.integers(0, (1 << 256) - 1))
nonzero = st.integers(1, R - 1)


@st.composite
def g1_points(draw: st.DrawFn) -> o.G1Aff | None:
    return o.aff1(o.ob.multiply(o.ob.G1, draw(scalar)))


@st.composite
def g2_points(draw: st.DrawFn) -> o.G2Aff | None:
    return o.aff2(o.ob.multiply(o.ob.G2, draw(scalar)))


@st.composite
def twist_points(draw: st.DrawFn) -> o.G2Aff:
    """Points on the twist: in G2, outside it, of small order, and mixtures."""
    kind = draw(st.sampled_from(["g2", "random", "torsion", "g2+torsion", "cofactor-part"]))
    if kind == "random":
        return o.twist_point(draw(st.integers(0, 1 << 32)))
    if kind == "cofactor-part":
        q = o.ob.multiply(o.ref2(o.twist_point(draw(st.integers(0, 1 << 32)))), R)
    else:
        q = o.ob.multiply(o.ob.G2, draw(nonzero))
        if kind != "g2":
            t = o.ob.multiply(o.ref2(o.torsion(draw(st.sampled_from(o.H2_FACTORS)))), draw(nonzero))
            q = t if kind == "torsion" else o.ob.add(q, t)
    pt = o.aff2(q)
    return pt if pt is not None else c.G2_GEN


# --- 1. fields ----------------------------------------------------------------------


@budget(60, 5000)
@given(fp, fp)
def test_fp_matches_py_ecc(a: int, b: int) -> None:
    """Square root (the a^((p+1)/4) root) and squareness."""
    euler = o.FQ(a) ** ((P - 1) // 2)
    assert f.fp_is_square(a) == (a == 0 or euler == o.FQ.one())
    root = f.fp_sqrt(a)
    assert (root is not None) == f.fp_is_square(a)
    if root is not None:
        assert o.FQ(root) * o.FQ(root) == o.FQ(a) and root == (o.FQ(a) ** ((P + 1) // 4)).n % P
    assert f.fp_sqrt((a * a) % P) in (a, P - a)


@budget(60, 5000)
@given(fp2, fp2, st.integers(0, 1 << 300))
def test_fp2_matches_py_ecc(x: f.Fp2, y: f.Fp2, e: int) -> None:
    X, Y = o.fq2(x), o.fq2(y)
    assert o.fq2(f.f2_add(x, y)) == X + Y and o.fq2(f.f2_sub(x, y)) == X - Y
    assert o.fq2(f.f2_neg(x)) == -X and o.fq2(f.f2_mul(x, y)) == X * Y
    assert o.fq2(f.f2_sqr(x)) == X * X and o.fq2(f.f2_scale(x, y[0])) == X * y[0]
    assert o.fq2(f.f2_conj(x)) == X**P and o.fq2(f.f2_mul_xi(x)) == X * o.fq2(f.XI)
    assert o.fq2(f.f2_pow(x, e)) == X**e
    if x == f.FP2_ZERO:
        with pytest.raises(ValueError):
            f.f2_inv(x)
    else:
        assert o.fq2(f.f2_inv(x)) * X == o.FQ2.one()


def pe(x: f.Fp12) -> Any:
    return o.fq12(f.to_py_ecc_coeffs(x))


@budget(60, 6000)
@given(fp12, fp12)
def test_fp12_matches_py_ecc(x: f.Fp12, y: f.Fp12) -> None:
    """Products (full and line-shaped), square, inverse."""
    X, Y = pe(x), pe(y)
    assert pe(f.f12_mul(x, y)) == X * Y and pe(f.f12_sqr(x)) == X * X
    line = (y[0], 0, y[2], y[3], 0, 0, y[6], y[7], 0, 0, 0, 0)
    assert pe(f.f12_mul_line(x, y[0], y[2], y[3], y[6], y[7])) == X * pe(line)
    assert pe(f.f12_mul_line1(x, y[2], y[3], y[6], y[7])) == X * pe((1, *line[1:]))
    if x == (0,) * 12:
        with pytest.raises(ValueError):
            f.f12_inv(x)
    else:
        assert pe(f.f12_inv(x)) * X == o.FQ12.one()


@budget(10, 250)
@given(fp12, st.sampled_from([1, 2, 3, 6]))
def test_fp12_frobenius_matches_py_ecc(x: f.Fp12, n: int) -> None:
    """f^(pⁿ) (n = 6: the conjugate), checked by py_ecc's exponentiation."""
    assert pe(f.f12_conj(x) if n == 6 else f.f12_frob(x, n)) == pe(x) ** (P**n)


@budget(10, 150)
@given(fp12.filter(lambda x: x != (0,) * 12))
def test_cyclotomic_ops_match_py_ecc(x: f.Fp12) -> None:
    """After the easy part: Granger–Scott squaring and f^u agree with py_ecc."""
    y = f.f12_mul(f.f12_conj(x), f.f12_inv(x))
    y = f.f12_mul(f.f12_frob(y, 2), y)
    Y = pe(y)
    assert o.FQ12.one() == Y ** (P**4 - P**2 + 1)
    assert pe(f.f12_cyc_sqr(y)) == Y * Y
    assert pe(pg._cyc_exp_u(y)) == Y**f.U


# --- 2. G1 and G2 -------------------------------------------------------------------


@budget(60, 1500)
@given(g1_points(), g1_points(), scalar, st.booleans())
def test_g1_group_law_matches_py_ecc(a: o.G1Aff | None, b: o.G1Aff | None, k: int, neg: bool) -> None:
    A, B = o.ref1(a), o.ref1(b)
    assert c.g1_add(a, b) == o.aff1(o.ob.add(A, B))
    assert c.g1_add(a, a) == o.aff1(o.ob.double(A))
    assert c.g1_neg(a) == o.aff1(o.ob.neg(A))
    assert c.g1_add(a, c.g1_neg(a)) is None
    expected = o.ob.multiply(A, k)
    assert c.g1_mul(a, -k if neg else k) == o.aff1(o.ob.neg(expected) if neg else expected)


@functools.cache
def _tables() -> tuple[list[o.G1Aff], list[list[list[o.G1Aff | None]]]]:
    bases = [o.aff1(o.ob.multiply(o.ob.G1, k)) for k in (1, 7, R - 3)]
    pts = [b for b in bases if b is not None]
    return pts, [c.g1_fixed_table(b) for b in pts]


@budget(30, 1000)
@example(start=c.G1_GEN, ks=[1, 0, 0])  # start + G: a doubling inside the sum
@example(start=c.G1_GEN, ks=[R - 1, 0, 0])  # the sum passes through infinity
@example(start=None, ks=[0, 0, 0])
@given(st.one_of(st.none(), g1_points()), st.lists(scalar, min_size=3, max_size=3))
def test_g1_fixed_base_msm_matches_py_ecc(start: o.G1Aff | None, ks: list[int]) -> None:
    """start + Σ kᵢ·Bᵢ through the windowed tables, scalars up to 2²⁵⁶ - 1."""
    bases, tables = _tables()
    acc = o.ref1(start)
    for b, k in zip(bases, ks):
        acc = o.ob.add(acc, o.ob.multiply(o.ref1(b), k))
    assert c.g1_msm_fixed(start, tables, ks) == o.aff1(acc)


coord = st.one_of(fp, st.integers(P, (1 << 256) - 1), st.sampled_from([P, P + 1, 2 * P]))


@budget(60, 8000)
@given(st.one_of(st.tuples(coord, coord), g1_points().filter(bool)), st.sampled_from([0, 1, P]))
def test_g1_on_curve_matches_py_ecc(pt: o.G1Aff, shift: int) -> None:
    """Random pairs (mostly off-curve), curve points, and curve points with y + p."""
    pt = (pt[0], pt[1] + shift)
    assert c.g1_on_curve(pt) == o.g1_valid(pt)


def g2_add(p: o.G2Aff | None, q: o.G2Aff | None) -> o.G2Aff | None:
    """popgate's G2 addition as its scalar multiplication and subgroup check use it (Jacobian)."""

    def jac(pt: o.G2Aff | None) -> c._J2:
        return c._J2_INF if pt is None else (pt[0], pt[1], f.FP2_ONE)

    return c._j2_affine(c._j2_add(jac(p), jac(q)))


@budget(20, 300)
@given(g2_points(), g2_points(), scalar)
def test_g2_group_law_matches_py_ecc(a: o.G2Aff | None, b: o.G2Aff | None, k: int) -> None:
    A, B = o.ref2(a), o.ref2(b)
    assert g2_add(a, b) == o.aff2(o.ob.add(A, B))
    assert g2_add(a, a) == o.aff2(o.ob.double(A))
    assert c.g2_mul(a, k) == o.aff2(o.ob.multiply(A, k))
    if a is not None:
        assert c.g2_neg(a) == o.aff2(o.ob.neg(A))
        assert g2_add(a, c.g2_neg(a)) is None
        assert c.g2_psi(a) == o.aff2(o.ob.multiply(A, P))  # ψ acts as p on G2


@budget(25, 400)
@example(q=o.torsion(o.H2_FACTORS[0]))  # one point of each prime order dividing the cofactor:
@example(q=o.torsion(o.H2_FACTORS[1]))  # the accepted set is a subgroup of a cyclic group,
@example(q=o.torsion(o.H2_FACTORS[2]))  # so these four decide that no cofactor torsion passes
@example(q=o.torsion(o.H2_FACTORS[3]))
@given(twist_points())
def test_g2_subgroup_check_matches_r_torsion(q: o.G2Aff) -> None:
    """g2_in_subgroup(Q) exactly when py_ecc's [r]Q = O, for points of G2,
    random twist points, points of each prime order dividing the cofactor, sums."""
    assert c.g2_on_curve(q) and o.g2_on_twist(q)
    assert c.g2_in_subgroup(q) == o.g2_valid(q)


@budget(60, 3000)
@given(st.one_of(st.tuples(st.tuples(coord, coord), st.tuples(coord, coord)), twist_points()))
def test_g2_on_curve_matches_py_ecc(q: o.G2Aff) -> None:
    assert c.g2_on_curve(q) == o.g2_on_twist(q)


# --- 3. encodings -------------------------------------------------------------------


@st.composite
def g1_words(draw: st.DrawFn) -> int:
    """Compressed G1 words: real encodings (either sign), x ≥ p, random words."""
    kind = draw(st.sampled_from(["point", "x>=p", "random", "special"]))
    if kind == "point":
        return c.g1_compress(draw(g1_points())) ^ draw(st.sampled_from([0, 1]))
    if kind == "x>=p":
        return draw(st.integers(P, (1 << 255) - 1)) << 1 | draw(st.sampled_from([0, 1]))
    if kind == "special":
        return draw(st.sampled_from([0, 1, 2, 3, P << 1, (P - 1) << 1, (1 << 256) - 1]))
    return draw(st.integers(0, (1 << 256) - 1))


@st.composite
def g2_words(draw: st.DrawFn) -> tuple[int, int]:
    """Compressed G2 words (c0 = x.c0 << 2 | hint << 1 | sign, c1 = x.c1): real
    encodings of twist points with flipped hint/sign bits, x ≥ p, random words."""
    kind = draw(st.sampled_from(["point", "x>=p", "random", "special"]))
    if kind == "point":
        c0, c1 = c.g2_compress(draw(twist_points()))
        return c0 ^ draw(st.sampled_from([0, 1, 2, 3])), c1
    if kind == "x>=p":
        if draw(st.booleans()):
            return draw(st.integers(P, (1 << 254) - 1)) << 2 | draw(st.integers(0, 3)), draw(fp)
        return draw(fp) << 2 | draw(st.integers(0, 3)), draw(st.integers(P, (1 << 256) - 1))
    if kind == "special":
        return draw(st.sampled_from([(0, 0), (1, 0), (2, 0), (3, 0), (0, 1), (4, 0), (P << 2, 0)]))
    return draw(st.integers(0, (1 << 256) - 1)), draw(st.integers(0, (1 << 256) - 1))


@budget(60, 8000)
@given(g1_words())
def test_g1_decompression_matches_spec(w: int) -> None:
    """Same point (or same refusal) as the Solidity decoder; decoded points are on the curve."""
    got = c.g1_decompress(w)
    assert got == o.g1_decompress(w)
    if isinstance(got, tuple):
        assert o.g1_valid(got) and c.g1_compress(got) == w


@budget(40, 3000)
@given(g2_words())
def test_g2_decompression_matches_spec(w: tuple[int, int]) -> None:
    got = c.g2_decompress(*w)
    assert got == o.g2_decompress(*w)
    if isinstance(got, tuple):
        assert o.g2_on_twist(got) and c.g2_compress(got) == w


@budget(30, 1000)
@given(twist_points())
def test_g2_compression_round_trips_through_spec_decoder(q: o.G2Aff) -> None:
    assert o.g2_decompress(*c.g2_compress(q)) == q


BAD_UINTS = [True, False, 1.0, -1, "-1", " 1", "1 ", "+1", "", "0x", "1e3", "0b1", "0" * 79, "0x" + "0" * 65]


@st.composite
def wire_uint(draw: st.DrawFn, value: int) -> tuple[Any, bool]:
    """``value`` as JSON the way a client may send it, and whether it is a valid uint256."""
    form = draw(st.sampled_from(["int", "dec", "hex", "HEX", "bad"]))
    if form == "bad":
        return draw(st.sampled_from(BAD_UINTS)), False
    ok = value < 1 << 256
    if form == "int":
        return value, ok
    if form == "dec":
        return str(value), ok and len(str(value)) <= 78
    digits = f"{value:x}"
    return ("0x" + digits if form == "hex" else "0X" + digits.upper()), ok and len(digits) <= 64


def g1_coords_with_noise(draw: st.DrawFn) -> tuple[int, int]:
    pt = draw(g1_points()) or (0, 0)
    kind = draw(st.sampled_from(["point", "x+p", "y+p", "y+1", "random", "huge"]))
    x, y = pt
    return {
        "point": (x, y),
        "x+p": (x + P, y),
        "y+p": (x, y + P),
        "y+1": (x, y + 1),
        "random": (draw(coord), draw(coord)),
        "huge": (x, 1 << 256),
    }[kind]


def parse_outcome(fn: Any) -> Any:
    try:
        return "point", fn()
    except Malformed:
        return "malformed"
    except InvalidProof:
        return "invalid"


@budget(60, 3000)
@given(st.data())
def test_snarkjs_g1_parsing_matches_spec(data: st.DataObject) -> None:
    """[x, y] / [x, y, z]: malformed numbers or z ∉ {0, 1} are Malformed; z = 0
    (infinity), a coordinate ≥ p or a point off the curve are InvalidProof."""
    x, y = g1_coords_with_noise(data.draw)
    z = data.draw(st.sampled_from([None, 0, 1, 1, 1, 2, P + 1]))
    wires = [data.draw(wire_uint(v)) for v in (x, y, *([] if z is None else [z]))]
    obj = [w for w, _ in wires]
    if not all(ok for _, ok in wires) or (z is not None and z not in (0, 1)):
        expected: Any = "malformed"
    elif z == 0 or not o.g1_valid((x, y)):
        expected = "invalid"
    else:
        expected = ("point", (x, y))
    assert parse_outcome(lambda: affine_g1(g1_proj(obj, "A"), "A", InvalidProof)) == expected


@budget(40, 600)
@given(st.data())
def test_snarkjs_g2_parsing_matches_spec(data: st.DataObject) -> None:
    q = data.draw(twist_points())
    kind = data.draw(st.sampled_from(["point", "x0+p", "y1+p", "y0+1", "swap-x", "random"]))
    (x0, x1), (y0, y1) = q
    x0, x1, y0, y1 = {
        "point": (x0, x1, y0, y1),
        "x0+p": (x0 + P, x1, y0, y1),
        "y1+p": (x0, x1, y0, y1 + P),
        "y0+1": (x0, x1, y0 + 1, y1),
        "swap-x": (x1, x0, y0, y1),
        "random": tuple(data.draw(coord) for _ in range(4)),
    }[kind]
    z = data.draw(st.sampled_from([None, (0, 0), (1, 0), (1, 0), (0, 1), (P + 1, 0)]))
    wires = [data.draw(wire_uint(v)) for v in (x0, x1, y0, y1, *(z or ()))]
    w = [v for v, _ in wires]
    obj = [w[0:2], w[2:4]] + ([] if z is None else [w[4:6]])
    pt = ((x0, x1), (y0, y1))
    if not all(ok for _, ok in wires) or (z is not None and z not in ((0, 0), (1, 0))):
        expected: Any = "malformed"
    elif z == (0, 0) or not o.g2_on_twist(pt):
        expected = "invalid"
    else:
        expected = ("point", pt)
    assert parse_outcome(lambda: affine_g2(g2_proj(obj, "B"), "B", InvalidProof)) == expected


# --- 4. pairing ---------------------------------------------------------------------


@functools.cache
def e_gen() -> Any:
    return o.ob.pairing(o.ob.G2, o.ob.G1)


@budget(15, 300)
@given(nonzero, nonzero)
def test_pairing_is_bilinear(a: int, b: int) -> None:
    """e(aP, bQ) = e(P, Q)^(ab) (the right side by py_ecc), and the shared Miller
    loop of e(aP, bQ)·e(-abP, Q) is 1 after one final exponentiation."""
    pa, qb = c.g1_mul(c.G1_GEN, a), c.g2_mul(c.G2_GEN, b)
    assert pa is not None and qb is not None
    assert pe(pg.pairing(pa, qb)) == e_gen() ** (a * b % R)
    minus_ab = c.g1_mul(c.G1_GEN, -a * b % R)
    assert minus_ab is not None
    ml = pg.miller_loop([(pa, pg.line_schedule(qb)), (minus_ab, pg.line_schedule(c.G2_GEN))])
    assert pg.final_exponentiation(ml) == f.F12_ONE


@budget(2, 40)
@given(g1_points().filter(bool), g2_points().filter(bool))
def test_pairing_matches_py_ecc(p: o.G1Aff, q: o.G2Aff) -> None:
    assert pe(pg.pairing(p, q)) == o.ob.pairing(o.ref2(q), o.ref1(p))


@budget(3, 100)
@given(fp12.filter(lambda x: x != (0,) * 12))
def test_final_exponentiation_matches_py_ecc(x: f.Fp12) -> None:
    assert pe(pg.final_exponentiation(x)) == o.ob.final_exponentiate(pe(x))


# --- 5. Groth16 on mutated real proofs ------------------------------------------------

GROTH16_CASES = ["snarkjs-pub1", "snarkjs-pub2", "semaphore-js-v3-0", "world-id-protocol-compressed-15"]


@functools.cache
def groth16_case(cid: str) -> tuple[Any, o.Key, Any, list[int]]:
    """(vk JSON, oracle key, the parsed real proof, its public inputs)."""
    vk_json, proof_json, public = CASES[cid]
    vk = parse_vk(vk_json)
    prepared_key(vk_json)  # warm the verifier's cache outside the first example
    return (
        vk_json,
        o.Key(vk.alpha, vk.beta, vk.gamma, vk.delta, vk.ic),
        parse_proof(proof_json),
        parse_public(public),
    )


G1_MUTATIONS = ["point", "xy", "x+p", "y+p", "inf", "neg", "swap-xy", "y+1"]
G2_MUTATIONS = ["point", "twist", "coords", "x0+p", "y1+p", "inf", "neg", "swap-x", "swap-y", "y0+1"]
MUTATIONS = (
    [("a", m) for m in G1_MUTATIONS]
    + [("c", m) for m in G1_MUTATIONS]
    + [("b", m) for m in G2_MUTATIONS]
    + [("proof", m) for m in ("swap-ac", "scale-ab", "negate-ab")]
    + [("public", m) for m in ("random", "+r", "+1", "drop", "append")]
)


def mutate_g1(draw: st.DrawFn, how: str, pt: Any) -> Any:
    if how == "point":
        return draw(g1_points())
    if how == "xy":
        return draw(coord), draw(coord)
    if how == "inf" or pt is None:
        return None
    x, y = pt
    return {"x+p": (x + P, y), "y+p": (x, y + P), "neg": (x, -y % P), "swap-xy": (y, x), "y+1": (x, y + 1)}[
        how
    ]


def mutate_g2(draw: st.DrawFn, how: str, pt: Any) -> Any:
    if how == "point":
        return draw(g2_points())
    if how == "twist":
        return draw(twist_points())
    if how == "coords":
        return (draw(fp), draw(fp)), (draw(fp), draw(fp))
    if how == "inf" or pt is None:
        return None
    (x0, x1), (y0, y1) = pt
    return {
        "x0+p": ((x0 + P, x1), (y0, y1)),
        "y1+p": ((x0, x1), (y0, y1 + P)),
        "neg": ((x0, x1), (-y0 % P, -y1 % P)),
        "swap-x": ((x1, x0), (y0, y1)),
        "swap-y": ((x0, x1), (y1, y0)),
        "y0+1": ((x0, x1), (y0 + 1, y1)),
    }[how]


def mutate(draw: st.DrawFn, target: str, how: str, a: Any, b: Any, cc: Any, pub: list[int]) -> Any:
    if target == "a":
        a = mutate_g1(draw, how, a)
    elif target == "c":
        cc = mutate_g1(draw, how, cc)
    elif target == "b":
        b = mutate_g2(draw, how, b)
    elif how == "swap-ac":
        a, cc = cc, a
    elif how in ("scale-ab", "negate-ab"):  # (s·A, s⁻¹·B) still verifies: a valid proof we never saw
        if a is not None and b is not None and o.g1_valid(a) and o.g2_on_twist(b):
            s = draw(nonzero) if how == "scale-ab" else R - 1
            a = o.aff1(o.ob.multiply(o.ref1(a), s))
            b = o.aff2(o.ob.multiply(o.ref2(b), pow(s, -1, R)))
    elif how == "drop":
        pub = pub[:-1]
    elif how == "append":
        pub = [*pub, draw(st.integers(0, R - 1))]
    elif pub:
        i = draw(st.integers(0, len(pub) - 1))
        v = {"random": draw(scalar), "+r": pub[i] + R, "+1": (pub[i] + 1) % (1 << 256)}[how]
        pub = [*pub[:i], v, *pub[i + 1 :]]
    return a, b, cc, pub


def encode(draw: st.DrawFn, a: Any, b: Any, cc: Any) -> tuple[Any, tuple[Any, Any, Any]]:
    """The proof in an encoding popgate accepts, and the points it stands for."""
    form = draw(st.sampled_from(["packed", "abi", "snarkjs", "compressed"]))
    if (
        form == "compressed"
        and all(p is None or o.g1_valid(p) for p in (a, cc))
        and (b is None or o.g2_on_twist(b))
    ):
        b0, b1 = c.g2_compress(b)
        words = [c.g1_compress(a), b1, b0, c.g1_compress(cc)]
        if draw(st.booleans()):  # corrupt one word: the points are then what the spec decodes
            i = draw(st.integers(0, 3))
            words[i] = draw(
                st.one_of(st.integers(0, (1 << 256) - 1), st.just(words[i] ^ draw(st.integers(1, 3))))
            )
        da, db, dc = o.g1_decompress(words[0]), o.g2_decompress(words[2], words[1]), o.g1_decompress(words[3])
        hexed = [hex(w) for w in words]
        return (hexed if draw(st.booleans()) else {"compressed": hexed}), (da, db, dc)
    (ax, ay), (cx, cy) = a or (0, 0), cc or (0, 0)
    (bx0, bx1), (by0, by1) = b or ((0, 0), (0, 0))
    words = [ax, ay, bx1, bx0, by1, by0, cx, cy]
    if form == "abi":
        return "0x" + "".join(f"{w:064x}" for w in words), (a, b, cc)
    if form == "snarkjs":
        s = [str(w) for w in words]
        pi_b = (
            [[s[3], s[2]], [s[5], s[4]], ["1", "0"]]
            if b is not None
            else [["0", "0"], ["1", "0"], ["0", "0"]]
        )
        return {
            "pi_a": [s[0], s[1], "1"] if a is not None else ["0", "1", "0"],
            "pi_b": pi_b,
            "pi_c": [s[6], s[7], "1"] if cc is not None else ["0", "1", "0"],
        }, (a, b, cc)
    decimal = [str(w) for w in words]
    return (decimal if draw(st.booleans()) else {"packed": decimal}), (a, b, cc)


@budget(8, 400)
@given(st.data())
def test_groth16_fast_verifier_agrees_with_py_ecc(data: st.DataObject) -> None:
    """Real proofs, mutated (points replaced by curve points, twist points outside
    G2, random or unreduced coordinates, infinity, negations, swaps; valid
    rescalings; public inputs ≥ r, wrong count) and encoded four ways: verify_job
    accepts exactly when py_ecc's e(A, B) = e(α, β)·e(L, γ)·e(C, δ) holds for valid
    points, and otherwise refuses with Malformed or InvalidProof, never anything else."""
    cid = data.draw(st.sampled_from(GROTH16_CASES))
    vk_json, key, proof, public = groth16_case(cid)
    a, b, cc, pub = proof.a, proof.b, proof.c, list(public)
    for target, how in data.draw(st.lists(st.sampled_from(MUTATIONS), max_size=3)):
        a, b, cc, pub = mutate(data.draw, target, how, a, b, cc, pub)
    wire, points = encode(data.draw, a, b, cc)
    expected = "does not decompress" if False in points else o.groth16(key, *points, pub)
    event(f"expected {expected}")
    got = verify_job(vk_json, wire, [str(x) for x in pub])
    assert got is None or got[0] in ("malformed", "invalid_proof"), got
    assert (got is None) == (expected == "ok"), (expected, got)
