"""The Groth16 check on py_ecc, written the obvious way: the slow reference.

Uses ``py_ecc.optimized_bn128`` (py_ecc's faster flavour, projective
coordinates): four ``pairing()`` calls, each with its own final
exponentiation, and a 254-bit scalar multiplication for the G2 subgroup test.
Used by the tests (on a few cases) and the benchmark, never on the request path:
:func:`verify_reference` is :func:`verifiers.groth16.verify` done this way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from py_ecc import optimized_bn128

from popgate.verifiers.bn254.curve import G1Point, G2Point
from popgate.verifiers.groth16 import InvalidProof, Proof, VerifyingKey, _check_points, _check_public

ob: Any = optimized_bn128


def g1(pt: G1Point) -> Any:
    return ob.FQ(pt[0]), ob.FQ(pt[1]), ob.FQ.one()


def g2(pt: G2Point) -> Any:
    return ob.FQ2(list(pt[0])), ob.FQ2(list(pt[1])), ob.FQ2.one()


def g2_in_subgroup(pt: G2Point) -> bool:
    q = g2(pt)
    return bool(ob.is_on_curve(q, ob.b2)) and ob.is_inf(ob.multiply(q, ob.curve_order))


def groth16_check(vk: VerifyingKey, proof: Proof, public: Sequence[int]) -> bool:
    """``e(A, B) == e(α, β)·e(L, γ)·e(C, δ)`` with py_ecc; inputs already validated."""
    acc = g1(vk.ic[0])
    for x, ic in zip(public, vk.ic[1:]):
        acc = ob.add(acc, ob.multiply(g1(ic), x))
    lhs = ob.pairing(g2(proof.b), g1(proof.a))
    rhs = ob.pairing(g2(vk.beta), g1(vk.alpha)) * ob.pairing(g2(vk.delta), g1(proof.c))
    if not ob.is_inf(acc):
        rhs = rhs * ob.pairing(g2(vk.gamma), acc)
    return bool(lhs == rhs)


def verify_reference(vk: VerifyingKey, proof: Proof, public: Sequence[int]) -> None:
    """:func:`verifiers.groth16.verify` done naively with py_ecc (four pairings;
    ~1-2 s), after the same cheap checks. Same errors."""
    _check_public(vk.n_public, public)
    _check_points(proof)
    if not g2_in_subgroup(proof.b):
        raise InvalidProof(detail="B is not in the G2 subgroup")
    if not groth16_check(vk, proof, public):
        raise InvalidProof(detail="pairing check failed")
