"""Groth16 on BN254: parse snarkjs / EIP-197 / compressed encodings, verify fast.

Public API (all deterministic; keys and proofs are plain picklable data)::

    prepare_key(vk_json) -> PreparedKey        # ~0.3-1 s per key; cache it
    prepared_key(vk_json) -> PreparedKey       # the same through an LRU cache
    parse_proof(obj) -> Proof                  # snarkjs dict | {"packed": [8]} |
                                               # {"compressed": [4]} | ABI hex
    parse_public(values) -> list[int]
    verify(prepared, proof, public) -> None    # raises VerificationError
    verify_job(vk_json, proof_json, public) -> tuple[str, str] | None
                                               # for ProcessPoolExecutor

Errors: :class:`~verifiers.errors.Malformed` (reason ``malformed``) when an
input cannot be parsed or has the wrong shape; :class:`InvalidKey`
(``invalid_key``) for a key whose points are not valid; :class:`InvalidProof`
(``invalid_proof``) for a coordinate ≥ p, a point off the curve or at
infinity, B outside G2's subgroup, a public input ≥ r, or a failed pairing.
Every cheap check runs before any pairing. The same check on py_ecc (slow,
for the differential tests and the benchmark) is
:func:`verifiers.bn254.reference.verify_reference`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from popgate.verifiers.bn254.curve import (
    G1Point,
    G2Point,
    g1_decompress,
    g1_fixed_table,
    g1_msm_fixed,
    g1_on_curve,
    g2_decompress,
    g2_in_subgroup,
    g2_on_curve,
)
from popgate.verifiers.bn254.encoding import affine_g1, affine_g2, g1_proj, g2_proj, seq
from popgate.verifiers.bn254.encoding import parse_uint as parse_uint  # re-exported
from popgate.verifiers.bn254.fields import Fp12, P, R
from popgate.verifiers.bn254.pairing import Line, final_exponentiation, line_schedule, miller_loop
from popgate.verifiers.errors import Malformed, VerificationError


class InvalidProof(VerificationError):
    """The proof is well-formed but false, or its points are not valid."""

    reason = "invalid_proof"


class InvalidKey(VerificationError):
    """The verification key's points are not valid curve/subgroup points."""

    reason = "invalid_key"


#: Keys with more public inputs are refused: set-up costs ~70 ms and ~0.4 MB per input.
MAX_PUBLIC = 64


# --- keys ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifyingKey:
    """A parsed, validated Groth16 key (affine points)."""

    alpha: G1Point
    beta: G2Point
    gamma: G2Point
    delta: G2Point
    ic: tuple[G1Point, ...]

    @property
    def n_public(self) -> int:
        return len(self.ic) - 1

    def fingerprint(self) -> str:
        """SHA-256 over the integers, so any spelling of one key gives one id."""
        return hashlib.sha256(
            repr((self.alpha, self.beta, self.gamma, self.delta, self.ic)).encode()
        ).hexdigest()


def parse_vk(obj: Any) -> VerifyingKey:
    """Parse a snarkjs ``verification_key.json`` object and validate every point
    (ranges, curve, G2 subgroup). Raises Malformed or InvalidKey."""
    if not isinstance(obj, Mapping):
        raise Malformed(detail="verification key: expected an object")
    if obj.get("protocol", "groth16") != "groth16" or obj.get("curve", "bn128") not in ("bn128", "bn254"):
        raise Malformed(detail="verification key: not a groth16/bn128 key")
    try:
        alpha = affine_g1(g1_proj(obj["vk_alpha_1"], "vk_alpha_1"), "vk_alpha_1", InvalidKey)
        g2 = {
            k: affine_g2(g2_proj(obj[k], k), k, InvalidKey) for k in ("vk_beta_2", "vk_gamma_2", "vk_delta_2")
        }
        ic_raw = obj["IC"]
    except KeyError as exc:
        raise Malformed(detail=f"verification key: missing {exc.args[0]}") from None
    if not isinstance(ic_raw, list) or not 1 <= len(ic_raw) <= MAX_PUBLIC + 1:
        raise Malformed(detail=f"verification key: IC must hold 1..{MAX_PUBLIC + 1} points")
    ic = tuple(affine_g1(g1_proj(p, f"IC[{i}]"), f"IC[{i}]", InvalidKey) for i, p in enumerate(ic_raw))
    if "nPublic" in obj and obj["nPublic"] != len(ic) - 1:
        raise Malformed(detail="verification key: nPublic does not match IC")
    for k, pt in g2.items():
        if not g2_in_subgroup(pt):
            raise InvalidKey(detail=f"{k} is not in the G2 subgroup")
    return VerifyingKey(alpha, g2["vk_beta_2"], g2["vk_gamma_2"], g2["vk_delta_2"], ic)


@dataclass(frozen=True, slots=True)
class PreparedKey:
    """Everything per-key the fast verifier needs, computed once."""

    vk: VerifyingKey
    alphabeta: Fp12
    gamma_lines: list[Line]
    delta_lines: list[Line]
    ic_tables: list[list[list[G1Point | None]]]

    @property
    def n_public(self) -> int:
        return self.vk.n_public


def prepare_key(vk: VerifyingKey | Any) -> PreparedKey:
    """Parse (if needed) and precompute: e(α, β), the line schedules of γ and δ,
    fixed-base tables for IC[1:]. Raises Malformed or InvalidKey."""
    if not isinstance(vk, VerifyingKey):
        vk = parse_vk(vk)
    alphabeta = final_exponentiation(miller_loop([(vk.alpha, line_schedule(vk.beta))]))
    return PreparedKey(
        vk,
        alphabeta,
        line_schedule(vk.gamma),
        line_schedule(vk.delta),
        [g1_fixed_table(p) for p in vk.ic[1:]],
    )


_CACHE: OrderedDict[str, PreparedKey] = OrderedDict()
CACHE_SIZE = 16


def _json_id(obj: Any) -> str | None:
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError):
        return None
    return "json:" + hashlib.sha256(text.encode()).hexdigest()


def prepared_key(vk_json: Any) -> PreparedKey:
    """:func:`prepare_key` through a per-process LRU.

    Looked up first by a hash of the canonical JSON (no parsing at all on a
    hit), then by the parsed key's fingerprint (one key spelled two ways is
    prepared once). Raises like :func:`prepare_key`."""
    jid = None if isinstance(vk_json, VerifyingKey) else _json_id(vk_json)
    if jid is not None and jid in _CACHE:
        _CACHE.move_to_end(jid)
        return _CACHE[jid]
    vk = vk_json if isinstance(vk_json, VerifyingKey) else parse_vk(vk_json)
    fp = vk.fingerprint()
    prepared = _CACHE.get(fp) or prepare_key(vk)
    for k in (fp, jid):
        if k is not None:
            _CACHE[k] = prepared
            _CACHE.move_to_end(k)
    while len(_CACHE) > 2 * CACHE_SIZE:
        _CACHE.popitem(last=False)
    return prepared


# --- proofs ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Proof:
    """A Groth16 proof with A, C on G1 and B on the twist (ranges and curve checked;
    B's subgroup membership is checked by :func:`verify`)."""

    a: G1Point
    b: G2Point
    c: G1Point

    def packed(self) -> list[int]:
        """EIP-197 ``uint256[8]`` (B imaginary-first): plain data for a process pool."""
        (ax, ay), ((bx0, bx1), (by0, by1)), (cx, cy) = self.a, self.b, self.c
        return [ax, ay, bx1, bx0, by1, by0, cx, cy]


def proof_from_packed(words: Sequence[Any]) -> Proof:
    """EIP-197 ``uint256[8]``: ``[A.x, A.y, B.x.c1, B.x.c0, B.y.c1, B.y.c0, C.x, C.y]``
    (imaginary part first in B). (0, 0) means infinity and is rejected."""
    w = [parse_uint(v, f"packed[{i}]") for i, v in enumerate(seq(words, 8, "packed proof"))]
    a = affine_g1((w[0], w[1], 0 if w[0] == w[1] == 0 else 1), "A", InvalidProof)
    b_inf = w[2] == w[3] == w[4] == w[5] == 0
    b = affine_g2(((w[3], w[2]), (w[5], w[4]), (0, 0) if b_inf else (1, 0)), "B", InvalidProof)
    c = affine_g1((w[6], w[7], 0 if w[6] == w[7] == 0 else 1), "C", InvalidProof)
    return Proof(a, b, c)


_Point = TypeVar("_Point", G1Point, G2Point)


def proof_from_compressed(words: Sequence[Any]) -> Proof:
    """``uint256[4] = [A.x<<1|sA, B.x.c1, B.x.c0<<2|hint<<1|sB, C.x<<1|sC]`` (gnark /
    World ID / Semaphore v4 ``compressProof``)."""
    w = [parse_uint(v, f"compressed[{i}]") for i, v in enumerate(seq(words, 4, "compressed proof"))]
    a, b, c = g1_decompress(w[0]), g2_decompress(w[2], w[1]), g1_decompress(w[3])
    return Proof(_decompressed("A", a), _decompressed("B", b), _decompressed("C", c))


def _decompressed(name: str, pt: _Point | bool | None) -> _Point:
    """A decompressed point, or InvalidProof for infinity (None) and no point (False)."""
    if pt is None:
        raise InvalidProof(detail=f"{name} is the point at infinity")
    if isinstance(pt, bool):
        raise InvalidProof(detail=f"{name} does not decompress to a curve point")
    return pt


_ABI8 = re.compile(r"0x[0-9a-fA-F]{512}")


def parse_proof(obj: Any) -> Proof:
    """Accept a snarkjs ``proof.json`` object, ``{"packed": [8]}``,
    ``{"compressed": [4]}``, a bare list of 8 or 4, or the ABI hex of ``uint256[8]``."""
    if isinstance(obj, str):
        if not _ABI8.fullmatch(obj):
            raise Malformed(detail="proof: expected 0x + 512 hex digits (ABI uint256[8])")
        return proof_from_packed([int(obj[2 + 64 * i : 66 + 64 * i], 16) for i in range(8)])
    if isinstance(obj, (list, tuple)):
        if len(obj) == 8:
            return proof_from_packed(obj)
        if len(obj) == 4:
            return proof_from_compressed(obj)
        raise Malformed(detail="proof: a list must have 8 (packed) or 4 (compressed) words")
    if not isinstance(obj, Mapping):
        raise Malformed(detail="proof: unsupported encoding")
    if "packed" in obj:
        return proof_from_packed(obj["packed"])
    if "compressed" in obj:
        return proof_from_compressed(obj["compressed"])
    if obj.get("protocol", "groth16") != "groth16" or obj.get("curve", "bn128") not in ("bn128", "bn254"):
        raise Malformed(detail="proof: not a groth16/bn128 proof")
    try:
        a = affine_g1(g1_proj(obj["pi_a"], "pi_a"), "A", InvalidProof)
        b = affine_g2(g2_proj(obj["pi_b"], "pi_b"), "B", InvalidProof)
        c = affine_g1(g1_proj(obj["pi_c"], "pi_c"), "C", InvalidProof)
    except KeyError as exc:
        raise Malformed(detail=f"proof: missing {exc.args[0]}") from None
    return Proof(a, b, c)


def parse_public(values: Any, n_public: int | None = None) -> list[int]:
    """Public inputs as uint256s (Malformed on shape); range against r is checked by verify."""
    if not isinstance(values, (list, tuple)) or len(values) > MAX_PUBLIC:
        raise Malformed(detail="public inputs: expected a list")
    if n_public is not None and len(values) != n_public:
        raise Malformed(detail=f"public inputs: expected {n_public}, got {len(values)}")
    return [parse_uint(v, f"public[{i}]") for i, v in enumerate(values)]


def _check_public(n_public: int, public: Sequence[int]) -> None:
    if len(public) != n_public:
        raise Malformed(detail=f"public inputs: expected {n_public}, got {len(public)}")
    for i, x in enumerate(public):
        if not 0 <= x < R:
            raise InvalidProof(detail=f"public input {i} is not in the scalar field")


def _check_points(proof: Proof) -> None:
    """Re-check what parse_proof guarantees (a Proof may be built directly): ~20 µs."""
    if not (
        isinstance(proof.a, tuple)
        and isinstance(proof.c, tuple)
        and g1_on_curve(proof.a)
        and g1_on_curve(proof.c)
    ):
        raise InvalidProof(detail="A or C is not a curve point")
    if not (isinstance(proof.b, tuple) and g2_on_curve(proof.b)):
        raise InvalidProof(detail="B is not on the twist curve")


def verify(key: PreparedKey, proof: Proof, public: Sequence[int]) -> None:
    """Check ``e(A, B) = e(α, β)·e(L, γ)·e(C, δ)``, L = IC₀ + Σ xᵢ·ICᵢ.

    Returns None when the proof is valid; raises Malformed (wrong number of
    inputs) or InvalidProof (input ≥ r, B not in G2, failed pairing)."""
    _check_public(key.n_public, public)
    _check_points(proof)
    if not g2_in_subgroup(proof.b):
        raise InvalidProof(detail="B is not in the G2 subgroup")
    acc = g1_msm_fixed(key.vk.ic[0], key.ic_tables, list(public))
    try:
        b_lines = line_schedule(proof.b)
    except ValueError:
        raise InvalidProof(detail="B is degenerate") from None
    pairs: list[tuple[G1Point, list[Line]]] = [
        (proof.a, b_lines),
        ((proof.c[0], -proof.c[1] % P), key.delta_lines),
    ]
    if acc is not None:  # L = O (probability ~0) contributes e(O, γ) = 1
        pairs.append(((acc[0], -acc[1] % P), key.gamma_lines))
    if final_exponentiation(miller_loop(pairs)) != key.alphabeta:
        raise InvalidProof(detail="pairing check failed")


def verify_job(vk_json: Any, proof_json: Any, public_json: Any) -> tuple[str, str] | None:
    """Process-pool entry point on plain JSON data, with a per-process key cache.

    Returns None for a valid proof, else ``(reason, detail)`` (exceptions from
    ``verifiers.errors`` do not survive pickling intact); re-raise in the parent
    with :func:`raise_job_result`."""
    try:
        key = prepared_key(vk_json)
        verify(key, parse_proof(proof_json), parse_public(public_json, key.n_public))
    except VerificationError as exc:
        return exc.reason, exc.detail
    return None


def raise_job_result(result: tuple[str, str] | None) -> None:
    """Turn :func:`verify_job`'s result back into the exception it stands for."""
    if result is None:
        return
    reason, detail = result
    cls = {"malformed": Malformed, "invalid_proof": InvalidProof, "invalid_key": InvalidKey}
    raise cls.get(reason, VerificationError)(reason, detail)
