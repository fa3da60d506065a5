"""Poseidon-BN254 against circomlibjs / poseidon-lite / @mysten/sui outputs, and
the optimised permutation against a plain reference built from the same constants."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.verifiers.poseidon import R, _raw, poseidon, poseidon_hash

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "zklogin"
VECTORS = json.loads((FIX / "poseidon_vectors.json").read_text())["vectors"]


def reference_poseidon(inputs: list[int]) -> int:
    """circomlibjs ``poseidon_reference.js`` transcribed: full M every round."""
    raw = _raw()
    t = len(inputs) + 1
    rp = raw["rounds_p"][t - 2]  # type: ignore[index]
    c = [int(x, 16) for x in raw["C"][t - 2]]  # type: ignore[index]
    m = [[int(x, 16) for x in row] for row in raw["M"][t - 2]]  # type: ignore[index]
    state = [0, *inputs]
    for r in range(8 + rp):
        state = [(s + c[r * t + i]) % R for i, s in enumerate(state)]
        if r < 4 or r >= 4 + rp:
            state = [pow(s, 5, R) for s in state]
        else:
            state[0] = pow(state[0], 5, R)
        state = [sum(m[i][j] * state[j] for j in range(t)) % R for i in range(t)]
    return state[0]


@pytest.mark.parametrize("vec", VECTORS, ids=lambda v: f"n{len(v['inputs'])}")
def test_matches_npm_vectors(vec: dict) -> None:
    """Each vector (arity 1..16 from poseidon-lite==circomlibjs, 17..32 from @mysten/sui) matches."""
    assert poseidon_hash([int(x) for x in vec["inputs"]]) == int(vec["hash"])


def test_vectors_cover_every_arity_and_edges() -> None:
    """The fixture really covers arities 1..16 with 0 and r-1 and the >16 tree."""
    arities = {len(v["inputs"]) for v in VECTORS}
    assert set(range(1, 17)) <= arities and max(arities) == 32
    assert any(all(x == str(R - 1) for x in v["inputs"]) for v in VECTORS)
    assert any(all(x == "0" for x in v["inputs"]) for v in VECTORS)


def test_known_value() -> None:
    """poseidon([1, 2]) is circomlib's well-known test value."""
    assert poseidon([1, 2]) == 7853200120776062878684798364095072458815029376092732009249414926327459813530


@given(st.lists(st.integers(0, R - 1), min_size=1, max_size=16))
def test_optimised_equals_reference(xs: list[int]) -> None:
    """The sparse-matrix permutation equals the plain one for any inputs."""
    assert poseidon(xs) == reference_poseidon(xs)


@given(st.lists(st.integers(0, R - 1), min_size=17, max_size=64))
def test_tree_shape(xs: list[int]) -> None:
    """>16 inputs: chunks of 16 from the front, hashed, then hashed again (recursively)."""
    chunks = [poseidon(xs[i : i + 16]) for i in range(0, len(xs), 16)]
    assert poseidon_hash(xs) == poseidon_hash(chunks)


@pytest.mark.parametrize("bad", [[], [R], [-1], [0] * 17])
def test_rejects_out_of_range(bad: list[int]) -> None:
    """Empty, too many (for the direct form) and non-field inputs raise ValueError."""
    with pytest.raises(ValueError):
        poseidon(bad)


@given(st.lists(st.integers(0, R - 1), min_size=1, max_size=40), st.integers(0, 39))
def test_out_of_field_anywhere_rejected(xs: list[int], i: int) -> None:
    """One element >= r anywhere makes poseidon_hash refuse (no silent reduction)."""
    xs[i % len(xs)] += R
    with pytest.raises(ValueError):
        poseidon_hash(xs)
