"""Fields of BN254 on plain integers: Fp, Fp2 = Fp[i]/(i²+1), Fp12 = Fp2[w]/(w⁶-ξ).

ξ = 9 + i. An Fp2 element is a pair ``(a, b)`` meaning ``a + b·i``. An Fp12
element is a flat 12-tuple ``(f0.a, f0.b, f1.a, f1.b, …, f5.a, f5.b)`` meaning
``Σ fk·wᵏ``; ``w² = v`` and ``w⁶ = ξ``, so this is the usual tower
Fp2 ⊂ Fp6 ⊂ Fp12 written in one basis. The hot Fp12 products are unrolled
at import by :func:`_gen_mul` / :func:`_gen_sqr` (sums of products per
output coefficient, a single ``% P`` each: lazy reduction), because in
CPython the cost is the number of bytecodes and big-int operations, not of
function structure.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

U = 4965661367192848881  # BN parameter (the curve's "x" or "t")
P = 36 * U**4 + 36 * U**3 + 24 * U**2 + 6 * U + 1
R = 36 * U**4 + 36 * U**3 + 18 * U**2 + 6 * U + 1
if (P, R) != (
    21888242871839275222246405745257275088696311157297823662689037894645226208583,
    21888242871839275222246405745257275088548364400416034343698204186575808495617,
):
    raise ImportError("BN254 field orders do not follow from U")

Fp2 = tuple[int, int]
Fp12 = tuple[int, ...]

FP2_ZERO: Fp2 = (0, 0)
FP2_ONE: Fp2 = (1, 0)
XI: Fp2 = (9, 1)


# --- Fp ---------------------------------------------------------------------


def fp_sqrt(a: int) -> int | None:
    """The square root ``a^((p+1)/4)`` (p ≡ 3 mod 4), or None if ``a`` is no square.

    This particular root is the one the compressed-proof encoding refers to.
    """
    x = pow(a, (P + 1) // 4, P)
    return x if x * x % P == a % P else None


def fp_is_square(a: int) -> bool:
    """Euler's criterion (0 counts as a square)."""
    return a % P == 0 or pow(a, (P - 1) // 2, P) == 1


# --- Fp2 --------------------------------------------------------------------


def f2_add(x: Fp2, y: Fp2) -> Fp2:
    return ((x[0] + y[0]) % P, (x[1] + y[1]) % P)


def f2_sub(x: Fp2, y: Fp2) -> Fp2:
    return ((x[0] - y[0]) % P, (x[1] - y[1]) % P)


def f2_neg(x: Fp2) -> Fp2:
    return (-x[0] % P, -x[1] % P)


def f2_mul(x: Fp2, y: Fp2) -> Fp2:
    a, b = x
    c, d = y
    return ((a * c - b * d) % P, (a * d + b * c) % P)


def f2_sqr(x: Fp2) -> Fp2:
    a, b = x
    return ((a + b) * (a - b) % P, 2 * a * b % P)


def f2_scale(x: Fp2, k: int) -> Fp2:
    return (x[0] * k % P, x[1] * k % P)


def f2_inv(x: Fp2) -> Fp2:
    """Inverse in Fp2; raises ValueError for 0."""
    a, b = x
    t = pow(a * a + b * b, -1, P)
    return (a * t % P, -b * t % P)


def f2_conj(x: Fp2) -> Fp2:
    return (x[0], -x[1] % P)


def f2_pow(x: Fp2, e: int) -> Fp2:
    """``x**e``; a negative ``e`` inverts first (ValueError for zero)."""
    if e < 0:
        x, e = f2_inv(x), -e
    out = FP2_ONE
    for bit in bin(e)[2:]:
        out = f2_sqr(out)
        if bit == "1":
            out = f2_mul(out, x)
    return out


def f2_mul_xi(x: Fp2) -> Fp2:
    a, b = x
    return ((9 * a - b) % P, (a + 9 * b) % P)


# --- Fp12: generated products -------------------------------------------------


def _s(terms: list[str]) -> str:
    return "".join(terms) or "0"


def _gen_mul(name: str, gshape: dict[int, str], params: str, one: bool = False) -> Callable[..., Fp12]:
    """Build an unrolled product ``f · g`` where g has the nonzero coefficients
    ``gshape`` (k -> "fp2" or "fp": an Fp element has no imaginary part), plus
    a constant coefficient 1 when ``one``.

    Fp2 products use Karatsuba (ac, bd, (a+b)(c+d)); the products are summed
    per output coefficient (w⁰..w⁵, those with k+j ≥ 6 times ξ = 9 + i) and
    reduced once."""
    lines = [
        f"def {name}(f, {params}):",
        "    f0,f1,f2,f3,f4,f5,f6,f7,f8,f9,f10,f11 = f",
        "    " + "; ".join(f"s{k} = f{2 * k}+f{2 * k + 1}" for k in range(6)),
    ]
    fp2 = [j for j, shape in gshape.items() if shape == "fp2"]
    if fp2:
        lines.append("    " + "; ".join(f"h{j} = g{2 * j}+g{2 * j + 1}" for j in fp2))
    for n in range(6):
        grp: dict[str, dict[str, list[str]]] = {
            t: {"A": [], "B": [], "C": [], "R1": [], "I1": []} for t in "dx"
        }
        if one:
            grp["d"]["R1"].append(f"+f{2 * n}")
            grp["d"]["I1"].append(f"+f{2 * n + 1}")
        for k in range(6):
            for j, shape in gshape.items():
                if (k + j) % 6 != n:
                    continue
                g = grp["d" if k + j < 6 else "x"]
                if shape == "fp2":
                    g["A"].append(f"+f{2 * k}*g{2 * j}")
                    g["B"].append(f"+f{2 * k + 1}*g{2 * j + 1}")
                    g["C"].append(f"+s{k}*h{j}")
                else:
                    g["R1"].append(f"+f{2 * k}*g{2 * j}")
                    g["I1"].append(f"+f{2 * k + 1}*g{2 * j}")
        for t in "dx":
            g = grp[t]
            lines.append(f"    a{t} = {_s(g['A'])}; b{t} = {_s(g['B'])}")
            lines.append(f"    r{t} = a{t}-b{t}+{_s(g['R1'])}; i{t} = {_s(g['C'])}-a{t}-b{t}+{_s(g['I1'])}")
        lines.append(f"    o{2 * n} = (rd+9*rx-ix)%P; o{2 * n + 1} = (id+rx+9*ix)%P")
    lines.append("    return (" + ",".join(f"o{i}" for i in range(12)) + ")")
    scope: dict[str, Any] = {"P": P}
    exec("\n".join(lines), scope)  # noqa: S102 - trusted, generated above
    generated: Callable[..., Fp12] = scope[name]
    return generated


_FULL = {k: "fp2" for k in range(6)}
_mul_full = _gen_mul("_mul_full", _FULL, "g0,g1,g2,g3,g4,g5,g6,g7,g8,g9,g10,g11")


def f12_mul(f: Fp12, g: Fp12) -> Fp12:
    """Product in Fp12."""
    return _mul_full(f, *g)


#: f · (y + b·w + c·w³), the shape of a line function: y in Fp, b, c in Fp2.
f12_mul_line: Callable[..., Fp12] = _gen_mul("f12_mul_line", {0: "fp", 1: "fp2", 3: "fp2"}, "g0,g2,g3,g6,g7")
#: f · (1 + b·w + c·w³): a line divided by its Fp constant (same after final exponentiation).
f12_mul_line1: Callable[..., Fp12] = _gen_mul("f12_mul_line1", {1: "fp2", 3: "fp2"}, "g2,g3,g6,g7", one=True)


def _gen_sqr() -> Callable[[Fp12], Fp12]:
    """Unrolled ``f²``: cross terms fk·fj (k < j) once, doubled, by Karatsuba;
    squares fk² as ((a+b)(a-b), 2ab); one ``% P`` per output."""
    lines = [
        "def f12_sqr(f):",
        "    f0,f1,f2,f3,f4,f5,f6,f7,f8,f9,f10,f11 = f",
        "    " + "; ".join(f"s{k} = f{2 * k}+f{2 * k + 1}" for k in range(6)),
    ]
    for n in range(6):
        grp: dict[str, dict[str, list[str]]] = {
            t: {"A": [], "B": [], "C": [], "R1": [], "I1": []} for t in "dx"
        }
        for k in range(6):
            for j in range(k, 6):
                if (k + j) % 6 != n:
                    continue
                g = grp["d" if k + j < 6 else "x"]
                a, b, c, d = f"f{2 * k}", f"f{2 * k + 1}", f"f{2 * j}", f"f{2 * j + 1}"
                if k == j:
                    g["R1"].append(f"+({a}+{b})*({a}-{b})")
                    g["I1"].append(f"+2*{a}*{b}")
                else:
                    g["A"].append(f"+{a}*{c}")
                    g["B"].append(f"+{b}*{d}")
                    g["C"].append(f"+s{k}*s{j}")
        for t in "dx":
            g = grp[t]
            lines.append(f"    a{t} = {_s(g['A'])}; b{t} = {_s(g['B'])}")
            lines.append(
                f"    r{t} = 2*(a{t}-b{t})+{_s(g['R1'])}; i{t} = 2*({_s(g['C'])}-a{t}-b{t})+{_s(g['I1'])}"
            )
        lines.append(f"    o{2 * n} = (rd+9*rx-ix)%P; o{2 * n + 1} = (id+rx+9*ix)%P")
    lines.append("    return (" + ",".join(f"o{i}" for i in range(12)) + ")")
    scope: dict[str, Any] = {"P": P}
    exec("\n".join(lines), scope)  # noqa: S102 - trusted, generated above
    generated: Callable[[Fp12], Fp12] = scope["f12_sqr"]
    return generated


f12_sqr: Callable[[Fp12], Fp12] = _gen_sqr()

F12_ONE: Fp12 = (1,) + (0,) * 11


def f12_conj(f: Fp12) -> Fp12:
    """``f^(p⁶)``: negate the odd powers of w (the inverse on the cyclotomic subgroup)."""
    return tuple(x if (i >> 1) % 2 == 0 else -x % P for i, x in enumerate(f))


# γ[n][k] = ξ^(k·(pⁿ-1)/6), so (fk·wᵏ)^(pⁿ) = fk^(pⁿ)·γ[n][k]·wᵏ.
_FROB = {n: [f2_pow(XI, k * (P**n - 1) // 6) for k in range(6)] for n in (1, 2, 3)}


def f12_frob(f: Fp12, n: int) -> Fp12:
    """``f^(pⁿ)`` for n in 1, 2, 3."""
    out: list[int] = []
    for k in range(6):
        c = (f[2 * k], f[2 * k + 1])
        if n % 2:
            c = f2_conj(c)
        out.extend(f2_mul(c, _FROB[n][k]))
    return tuple(out)


def _f6_inv(a0: Fp2, a1: Fp2, a2: Fp2) -> tuple[Fp2, Fp2, Fp2]:
    """Inverse in Fp6 = Fp2[v]/(v³-ξ)."""
    c0 = f2_sub(f2_sqr(a0), f2_mul_xi(f2_mul(a1, a2)))
    c1 = f2_sub(f2_mul_xi(f2_sqr(a2)), f2_mul(a0, a1))
    c2 = f2_sub(f2_sqr(a1), f2_mul(a0, a2))
    t = f2_add(f2_mul(a0, c0), f2_mul_xi(f2_add(f2_mul(a2, c1), f2_mul(a1, c2))))
    ti = f2_inv(t)
    return f2_mul(c0, ti), f2_mul(c1, ti), f2_mul(c2, ti)


def f12_inv(f: Fp12) -> Fp12:
    """Inverse in Fp12 (raises ValueError for 0): ``conj(f) / (f·conj(f))``,
    the norm lying in Fp6 (even powers of w, v = w²)."""
    fc = f12_conj(f)
    n = f12_mul(f, fc)
    i0, i1, i2 = _f6_inv((n[0], n[1]), (n[4], n[5]), (n[8], n[9]))
    ninv = (i0[0], i0[1], 0, 0, i1[0], i1[1], 0, 0, i2[0], i2[1], 0, 0)
    return f12_mul(fc, ninv)


def f12_cyc_sqr(f: Fp12) -> Fp12:
    """Square of an element of the cyclotomic subgroup (Granger–Scott).

    Only valid after the easy part of the final exponentiation. Fp12 is seen
    as Fp4³ with Fp4 = Fp2[y]/(y²-ξ), y = w³: the pairs (f0, f3), (f1, f4),
    (f2, f5) are squared in Fp4 and recombined (arkworks' z0..z5 naming).
    """
    z0r, z0i, z2r, z2i, z4r, z4i, z1r, z1i, z3r, z3i, z5r, z5i = f
    # (z0 + z1·y)² = t0 + t1·y with t0 = z0² + ξ·z1², t1 = 2·z0·z1
    s0r, s0i = (z0r + z0i) * (z0r - z0i), 2 * z0r * z0i
    s1r, s1i = (z1r + z1i) * (z1r - z1i), 2 * z1r * z1i
    t0r, t0i = s0r + 9 * s1r - s1i, s0i + s1r + 9 * s1i
    t1r, t1i = 2 * (z0r * z1r - z0i * z1i), 2 * (z0r * z1i + z0i * z1r)
    s0r, s0i = (z2r + z2i) * (z2r - z2i), 2 * z2r * z2i
    s1r, s1i = (z3r + z3i) * (z3r - z3i), 2 * z3r * z3i
    t2r, t2i = s0r + 9 * s1r - s1i, s0i + s1r + 9 * s1i
    t3r, t3i = 2 * (z2r * z3r - z2i * z3i), 2 * (z2r * z3i + z2i * z3r)
    s0r, s0i = (z4r + z4i) * (z4r - z4i), 2 * z4r * z4i
    s1r, s1i = (z5r + z5i) * (z5r - z5i), 2 * z5r * z5i
    t4r, t4i = s0r + 9 * s1r - s1i, s0i + s1r + 9 * s1i
    t5r, t5i = 2 * (z4r * z5r - z4i * z5i), 2 * (z4r * z5i + z4i * z5r)
    x5r, x5i = 9 * t5r - t5i, t5r + 9 * t5i  # ξ·t5
    return (
        (3 * t0r - 2 * z0r) % P,
        (3 * t0i - 2 * z0i) % P,  # f0 = z0'
        (3 * x5r + 2 * z2r) % P,
        (3 * x5i + 2 * z2i) % P,  # f1 = z2'
        (3 * t2r - 2 * z4r) % P,
        (3 * t2i - 2 * z4i) % P,  # f2 = z4'
        (3 * t1r + 2 * z1r) % P,
        (3 * t1i + 2 * z1i) % P,  # f3 = z1'
        (3 * t4r - 2 * z3r) % P,
        (3 * t4i - 2 * z3i) % P,  # f4 = z3'
        (3 * t3r + 2 * z5r) % P,
        (3 * t3i + 2 * z5i) % P,
    )  # f5 = z5'


def to_py_ecc_coeffs(f: Fp12) -> list[int]:
    """The 12 coefficients of ``f`` in py_ecc's FQ12 basis (w¹² = 18w⁶ - 82,
    i = w⁶ - 9), for cross-checking against the reference implementation."""
    out = [0] * 12
    for k in range(6):
        a, b = f[2 * k], f[2 * k + 1]
        out[k] = (a - 9 * b) % P
        out[k + 6] = b
    return out
