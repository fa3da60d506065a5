"""World ID 3.x ("legacy", Semaphore v3) proofs, verified locally.

Accepts the IDKit 2.x result ``{proof, merkle_root, nullifier_hash,
verification_level}`` and the IDKit 4.x v3 response item ``{identifier, proof,
merkle_root, nullifier, signal_hash?}`` (or a 4.x result whose ``responses``
hold one). popgate computes ``signal_hash`` and the external nullifier itself
from the configured ``app_id``/``action`` and the request-bound signal; hashes
sent by the client are ignored. Public inputs, in circuit order:
``[root, nullifierHash, signalHash, externalNullifierHash]``.

Entry points: :func:`check` (the one check order, used by the gateway with
its roots source and proof pool injected, and by ``popgate verify``),
:func:`verify_result` (the same with a fixed root set and an in-process
Groth16 check), :func:`canonical_nullifier`, :func:`signal_hash`,
:func:`external_nullifier`, :func:`key` (bundled keys). No store here: a
verified proof carries the nullifier's :class:`~verifiers.spend.Spend`
(``pg:{worldid-nullifier:<scope>:<nullifier>}``), which the caller claims
(``nullifier_reused`` when the allowance is used).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Collection, Container, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from Crypto.Hash import keccak

from popgate.verifiers.bn254.encoding import parse_uint
from popgate.verifiers.bn254.fields import R
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.groth16 import PreparedKey, Proof, parse_proof, prepared_key, verify
from popgate.verifiers.spend import Spend

#: Nullifiers spent for good still need a store TTL: ten years.
FOREVER = 10 * 365 * 86400.0


class UnknownRoot(VerificationError):
    """The proof's Merkle root is not among the currently valid roots."""

    reason = "unknown_root"


class NullifierReused(VerificationError):
    """This nullifier was already spent for this action."""

    reason = "nullifier_reused"


# --- hashing (IDKit 2.x / developer portal conventions) ------------------------


def hash_to_field(data: bytes) -> int:
    """``uint256(keccak256(data)) >> 8``: always below 2²⁴⁸ < r."""
    return int.from_bytes(keccak.new(data=data, digest_bits=256).digest(), "big") >> 8


def encode_signal(signal: str | bytes | None) -> bytes:
    """IDKit 2.x signal bytes: ``0x…`` strings are raw bytes (odd length left-padded),
    other strings UTF-8, None/"" empty. Raises Malformed for bad hex after ``0x``."""
    if signal is None:
        return b""
    if isinstance(signal, bytes):
        return signal
    if not isinstance(signal, str):
        raise Malformed(detail="signal: expected a string")
    if signal.startswith("0x"):
        digits = signal[2:]
        if not re.fullmatch(r"[0-9a-fA-F]*", digits):
            raise Malformed(detail="signal: invalid hex after 0x")
        return bytes.fromhex(digits.rjust(len(digits) + len(digits) % 2, "0"))
    return signal.encode("utf-8")


def signal_hash(signal: str | bytes | None) -> int:
    """The ``signalHash`` public input for ``signal`` (IDKit ``generateSignal``)."""
    return hash_to_field(encode_signal(signal))


def external_nullifier(app_id: str, action: str) -> int:
    """``hashToField(abi.encodePacked(uint256(hashToField(app_id)), action))``."""
    return hash_to_field(hash_to_field(app_id.encode()).to_bytes(32, "big") + action.encode())


_HEXNUM = re.compile(r"(?:0[xX])?([0-9a-fA-F]{1,128})")


def canonical_nullifier(value: str | int) -> str:
    """One spelling per nullifier: ``0x`` + 64 lower-case hex digits.

    Strings are hex with or without ``0x``, any case, any zero padding
    (``0xABC``, ``abc`` and ``0x0…0abc`` are one nullifier); ints are taken as is.
    Raises Malformed for anything else or for a value ≥ r."""
    if isinstance(value, bool):
        raise Malformed(detail="nullifier: boolean")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and (m := _HEXNUM.fullmatch(value)):
        n = int(m.group(1), 16)
    else:
        raise Malformed(detail="nullifier: expected hex")
    if not 0 <= n < R:
        raise Malformed(detail="nullifier: not a field element")
    return f"0x{n:064x}"


def nullifier_scope(app_id: str, action: str) -> str:
    """The per-action namespace for spend-once nullifier keys."""
    return f"0x{external_nullifier(app_id, action):064x}"


def nullifier_spend(scope: str, nullifier: str, ttl: float = FOREVER, limit: int = 1) -> Spend:
    """A nullifier's allowance in ``scope``: ``limit`` uses, remembered ``ttl`` seconds."""
    return Spend(
        "worldid-nullifier", f"{scope}:{nullifier}", ttl, limit, NullifierReused.reason, "allowance used"
    )


# --- keys ---------------------------------------------------------------------------


@cache
def _data(name: str) -> Any:
    return json.loads((Path(__file__).parent / "data" / name).read_text())


def key(name: str = "worldid_v3", depth: int | None = None) -> dict[str, Any]:
    """A bundled snarkjs key: ``worldid_v3`` (production, Semaphore v3 depth 30),
    ``semaphore_v3`` (depth 16..32) or ``semaphore_v4`` (depth 1..32). Raises ValueError."""
    if name == "worldid_v3" and depth in (None, 30):
        return dict(_data("worldid_v3_semaphore_depth30.vk.json"))
    files = {
        "semaphore_v3": ("semaphore_v3_pse_all_depths.json", 16, 32),
        "semaphore_v4": ("semaphore_v4_pse_all_depths.json", 1, 32),
    }
    if name not in files or depth is None:
        raise ValueError(f"unknown key {name!r} depth {depth}")
    fname, lo, hi = files[name]
    if not lo <= depth <= hi:
        raise ValueError(f"{name}: depth must be in {lo}..{hi}")
    all_ = _data(fname)
    out = {k: v for k, v in all_.items() if k != "note"}
    out["vk_delta_2"] = all_["vk_delta_2"][depth - lo]
    out["IC"] = all_["IC"][depth - lo]
    return out


def key_spec(spec: str) -> dict[str, Any]:
    """A bundled key by name: ``worldid_v3``, ``semaphore_v3:16``, ``semaphore_v4:10``…
    Raises Malformed for an unknown name or depth."""
    name, _, depth = spec.partition(":")
    try:
        return key(name, int(depth) if depth else None)
    except ValueError as exc:
        raise Malformed(detail=f"key {spec!r}: {exc}") from None


# --- results ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WorldIdResult:
    """A parsed IDKit result (nothing verified yet)."""

    proof: Proof
    merkle_root: int
    nullifier: int
    verification_level: str


def _proof_field(raw: Any) -> Proof:
    if isinstance(raw, str) and raw.lstrip().startswith("["):
        try:
            nested = json.loads(raw)  # [[a0,a1],[[b..],[b..]],[c0,c1]] as in verifyProof(a, b, c)
            flat = [*nested[0], *nested[1][0], *nested[1][1], *nested[2]]
        except (ValueError, TypeError, IndexError, KeyError):
            raise Malformed(detail="proof: bad nested JSON") from None
        return parse_proof(flat)
    return parse_proof(raw)


def parse_result(result: Any) -> WorldIdResult:
    """IDKit 2.x result, IDKit 4.x v3 item, or a 4.x result holding one; raises Malformed
    (or InvalidProof for proof points that are not valid)."""
    if isinstance(result, Mapping) and isinstance(result.get("responses"), list):
        items = [r for r in result["responses"] if isinstance(r, Mapping) and "merkle_root" in r]
        if not items:
            raise Malformed(detail="result: no World ID 3.x (v3) response item")
        result = items[0]
    if not isinstance(result, Mapping):
        raise Malformed(detail="result: expected an object")
    try:
        nullifier = result["nullifier_hash"] if "nullifier_hash" in result else result["nullifier"]
        level = result.get("verification_level", result.get("identifier", ""))
        root, proof = result["merkle_root"], result["proof"]
    except KeyError as exc:
        raise Malformed(detail=f"result: missing {exc.args[0]}") from None
    if not isinstance(level, str):
        raise Malformed(detail="result: verification level must be a string")
    root_n, nullifier_n = parse_uint(root, "merkle_root"), parse_uint(nullifier, "nullifier")
    return WorldIdResult(_proof_field(proof), root_n, nullifier_n, level)


@dataclass(frozen=True, slots=True)
class Verified:
    """What a valid World ID proof establishes, and the nullifier to spend."""

    nullifier: str  # canonical form
    merkle_root: str
    verification_level: str
    signal_hash: str
    external_nullifier: str  # 0x + 64 hex: the nullifier's scope
    spend: Spend


RootValid = Callable[[int], Awaitable[bool]]
ProofCheck = Callable[[Proof, list[int]], Awaitable[None]]


async def check(
    result: Any,
    *,
    app_id: str,
    action: str,
    signal: str | bytes | None,
    root_valid: RootValid,
    verify_proof: ProofCheck,
    levels: Collection[str] = (),
    ttl: float = FOREVER,
    limit: int = 1,
    given_signal_hash: int | None = None,
) -> Verified:
    """The World ID 3.x check order: parse → verification level (when
    ``levels`` is not empty) → field elements → ``root_valid`` (before any
    pairing) → ``verify_proof(proof, public inputs)`` (raises) → the
    nullifier's Spend (``ttl``, ``limit`` uses). Does not spend it.
    ``given_signal_hash`` replaces the hash of ``signal`` (the dApp API, whose
    caller checks the hash against its own signal).

    Raises Malformed, ``verification_level``, UnknownRoot or the proof
    check's error (InvalidProof)."""
    parsed = parse_result(result)
    if levels and parsed.verification_level not in levels:
        raise VerificationError("verification_level", parsed.verification_level)
    if parsed.nullifier >= R or parsed.merkle_root >= R:
        raise Malformed(detail="root or nullifier not a field element")
    if not await root_valid(parsed.merkle_root):
        raise UnknownRoot(detail=f"root 0x{parsed.merkle_root:064x}")
    sh = given_signal_hash if given_signal_hash is not None else signal_hash(signal)
    en = external_nullifier(app_id, action)
    await verify_proof(parsed.proof, [parsed.merkle_root, parsed.nullifier, sh, en])
    nullifier, scope = canonical_nullifier(parsed.nullifier), f"0x{en:064x}"
    return Verified(
        nullifier,
        f"0x{parsed.merkle_root:064x}",
        parsed.verification_level,
        f"0x{sh:064x}",
        scope,
        nullifier_spend(scope, nullifier, ttl, limit),
    )


async def verify_result(
    prepared: PreparedKey,
    result: Any,
    *,
    app_id: str,
    action: str,
    signal: str | bytes | None = "",
    valid_roots: Container[int] | Callable[[int], bool],
) -> Verified:
    """:func:`check` for (app_id, action, signal) against a fixed root set
    (or predicate), with the Groth16 check in this process."""

    async def root_valid(root: int) -> bool:
        return valid_roots(root) if callable(valid_roots) else root in valid_roots

    async def verify_proof(proof: Proof, public: list[int]) -> None:
        verify(prepared, proof, public)

    return await check(
        result, app_id=app_id, action=action, signal=signal, root_valid=root_valid, verify_proof=verify_proof
    )


def default_key() -> PreparedKey:
    """The World ID production key, prepared (cached per process)."""
    return prepared_key(key("worldid_v3"))
