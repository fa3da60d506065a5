"""Poseidon over the BN254 scalar field with circomlib's parameters.

Constants (round constants ``C`` and MDS matrices ``M`` for widths t = 2..17)
come from ``verifiers/data/poseidon_bn254.json.gz``, dumped from circomlibjs by
``tests/fixtures/gen/zklogin/gen.mjs``; they are checked against circomlibjs
and poseidon-lite outputs in ``tests/verifiers/test_poseidon.py``.

:func:`poseidon` hashes 1..16 field elements directly, like circomlib's
``Poseidon(n)``. :func:`poseidon_hash` is zkLogin's ``poseidonHash``: more
than 16 inputs are split into chunks of 16 (the last chunk shorter) whose
hashes are hashed again, recursively (the @mysten/sui SDK does one level, up
to 32 inputs; fastcrypto's ``poseidon_zk_login`` the same).

Errors: :class:`ValueError` for an input outside ``[0, r)`` or a bad count.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Sequence
from functools import cache, lru_cache
from operator import mul
from pathlib import Path
from typing import TypedDict

__all__ = ["R", "poseidon", "poseidon_hash"]

R = 21888242871839275222246405745257275088548364400416034343698204186575808495617
"""The BN254 scalar field order (the field Poseidon works in)."""

_DATA = Path(__file__).parent / "data" / "poseidon_bn254.json.gz"
_ROUNDS_F = 8


class _RawParams(TypedDict):
    """circomlib's constants per width t = 2..17, hex strings, index t - 2."""

    rounds_p: list[int]
    C: list[list[str]]
    M: list[list[list[str]]]


@lru_cache(maxsize=1)
def _raw() -> _RawParams:
    with gzip.open(_DATA, "rt", encoding="ascii") as f:
        data: _RawParams = json.load(f)
    return data


def _inverse(mat: list[list[int]]) -> list[list[int]]:
    """Invert a square matrix over F_R (Gauss-Jordan); raises ValueError if singular."""
    n = len(mat)
    aug = [list(row) + [int(i == j) for j in range(n)] for i, row in enumerate(mat)]
    for col in range(n):
        piv = next((r for r in range(col, n) if aug[r][col] % R), None)
        if piv is None:
            raise ValueError("singular matrix")
        aug[col], aug[piv] = aug[piv], aug[col]
        inv = pow(aug[col][col], R - 2, R)
        aug[col] = [x * inv % R for x in aug[col]]
        for r in range(n):
            if r != col and aug[r][col]:
                f = aug[r][col]
                aug[r] = [(x - f * y) % R for x, y in zip(aug[r], aug[col])]
    return [row[n:] for row in aug]


def _matmul(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    cols = list(zip(*b))
    return [[sum(x * y for x, y in zip(row, col)) % R for col in cols] for row in a]


_Sparse = tuple[int, int, tuple[int, ...], tuple[int, ...]]
_Params = tuple[
    tuple[tuple[int, ...], ...],  # first-half full-round constants
    tuple[tuple[tuple[int, ...], ...], ...],  # their MDS matrices
    tuple[_Sparse, ...],  # partial rounds: (constant, m00, u, w)
    tuple[tuple[int, ...], ...],  # second-half full-round constants
    tuple[tuple[int, ...], ...],  # MDS
]


@cache
def _params(t: int) -> _Params:
    """Derive the optimised round structure for width ``t`` from circomlib's C, M.

    Partial rounds only put x0 through the S-box, so (1) their constants,
    except the first element, are pushed through M into the next round, and
    (2) each partial round's dense M is written as ``sparse . diag(1, D)``
    with ``diag(1, D)`` moved before the S-box into the previous round
    (the equivalence in the Poseidon paper, appendix B). Outputs equal the
    plain permutation; the test vectors check that.
    """
    raw = _raw()
    rounds_p = raw["rounds_p"][t - 2]
    flat = [int(x, 16) for x in raw["C"][t - 2]]
    mds = [[int(x, 16) for x in row] for row in raw["M"][t - 2]]
    n_rounds = _ROUNDS_F + rounds_p
    if len(flat) != n_rounds * t or len(mds) != t:
        raise RuntimeError("poseidon constants have the wrong shape")
    consts = [flat[r * t : (r + 1) * t] for r in range(n_rounds)]
    half = _ROUNDS_F // 2
    for r in range(half, half + rounds_p):  # (1) fold constants forward
        rest = [0, *consts[r][1:]]
        consts[r][1:] = [0] * (t - 1)
        nxt = consts[r + 1]
        for i in range(t):
            nxt[i] = (nxt[i] + sum(m * x for m, x in zip(mds[i], rest))) % R
    acc = mds
    m_hat_inv = _inverse([row[1:] for row in mds[1:]])
    dinv = m_hat_inv
    sparse: list[_Sparse] = []
    for r in reversed(range(half, half + rounds_p)):  # (2) factor matrices
        d = [row[1:] for row in acc[1:]]
        if acc is not mds:  # D_r = D_(r+1) . M_hat, so D_r^-1 = M_hat^-1 . D_(r+1)^-1
            dinv = _matmul(m_hat_inv, dinv)
        b = acc[0][1:]
        u = tuple(sum(b[i] * dinv[i][j] for i in range(t - 1)) % R for j in range(t - 1))
        w = tuple(row[0] for row in acc[1:])
        sparse.append((consts[r][0], acc[0][0], u, w))
        acc = [mds[0]] + [
            [sum(d[i][k] * mds[k + 1][j] for k in range(t - 1)) % R for j in range(t)] for i in range(t - 1)
        ]
    sparse.reverse()
    m_t = tuple(tuple(row) for row in mds)
    first_m = tuple(m_t if r < half - 1 else tuple(tuple(row) for row in acc) for r in range(half))
    return (
        tuple(tuple(c) for c in consts[:half]),
        first_m,
        tuple(sparse),
        tuple(tuple(c) for c in consts[half + rounds_p :]),
        m_t,
    )


def _full_round(state: list[int], rc: tuple[int, ...], m: tuple[tuple[int, ...], ...]) -> list[int]:
    p = R
    s = []
    for x, c in zip(state, rc):
        x = (x + c) % p
        x2 = x * x % p
        s.append(x2 * x2 % p * x % p)
    return [sum(map(mul, row, s)) % p for row in m]


def poseidon(inputs: Sequence[int]) -> int:
    """Hash 1..16 field elements (circomlib ``Poseidon(n)``, initial state 0).

    Raises ValueError for an empty or too long input or an element outside
    ``[0, R)``.
    """
    n = len(inputs)
    if not 1 <= n <= 16:
        raise ValueError(f"poseidon takes 1..16 inputs, got {n}")
    for x in inputs:
        if not 0 <= x < R:
            raise ValueError("input not in the BN254 scalar field")
    first_c, first_m, partial, last_c, mds = _params(n + 1)
    p = R
    state = [0, *inputs]
    for rc, m in zip(first_c, first_m):
        state = _full_round(state, rc, m)
    s0 = state[0]
    rest = state[1:]  # left unreduced inside the partial rounds (bounded growth)
    for c0, m00, u, w in partial:
        x = (s0 + c0) % p
        x2 = x * x % p
        x = x2 * x2 % p * x % p
        s0 = (m00 * x + sum(map(mul, u, rest))) % p
        rest = [r + wi * x for r, wi in zip(rest, w)]
    state = [s0, *(r % p for r in rest)]
    for rc in last_c[:-1]:
        state = _full_round(state, rc, mds)
    # last round: only state[0] is needed
    s = []
    for x, c in zip(state, last_c[-1]):
        x = (x + c) % p
        x2 = x * x % p
        s.append(x2 * x2 % p * x % p)
    out: int = sum(map(mul, mds[0], s)) % p
    return out


def poseidon_hash(inputs: Sequence[int]) -> int:
    """zkLogin ``poseidonHash``: :func:`poseidon` for up to 16 inputs, else a
    16-ary tree (chunks of 16 from the front, each hashed, then hashed again).

    Raises ValueError like :func:`poseidon`.
    """
    n = len(inputs)
    if n <= 16:
        return poseidon(inputs)
    for x in inputs:
        if not 0 <= x < R:
            raise ValueError("input not in the BN254 scalar field")
    chunks = [poseidon(inputs[i : i + 16]) for i in range(0, n, 16)]
    return poseidon_hash(chunks)
