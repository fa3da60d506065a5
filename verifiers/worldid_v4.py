"""World ID 4.0 uniqueness proofs, verified locally (no cloud, no ``eth_call`` to the verifier).

A 4.0 response item (IDKit 4.x ``ResponseItemV4``) is ``{identifier, proof:
[c0, c1, c2, c3, merkle_root], nullifier, issuer_schema_id, expires_at_min,
signal_hash?}``: ``proof[0..3]`` is a compressed Groth16 proof (decompressed
by :func:`verifiers.groth16.proof_from_compressed`), ``proof[4]`` the
``WorldIDRegistry`` root. The circuit has 15 public inputs, in the order of
``WorldIDVerifier.verifyProofAndSignals`` (worldcoin/world-id-protocol
``contracts/src/core/WorldIDVerifier.sol``)::

    [nullifier, issuerSchemaId, issuerPubkey.x, issuerPubkey.y, expiresAtMin,
     credentialGenesisIssuedAtMin, merkleRoot, treeDepth, rpId,
     action = hashSignal(action), oprfPubkey.x, oprfPubkey.y, signalHash, nonce, sessionId]

popgate fills every input it asked for itself (rp id, action hash, signal
hash, nonce, session id 0, genesis minimum 0) and takes the chain facts
(root validity, issuer key of ``issuerSchemaId``, OPRF key of ``rpId``, tree
depth) from a :class:`Chain`; only the nullifier, schema id, expiry and root
come from the client. A value the client sends for ``signal_hash`` must equal
ours (a cheap early refusal); it is never used.

Check order (:func:`check`), cheapest first: parse → field ranges → schema
allowed → expiry (``expires_at_min + threshold >= now``, the contract's
``ExpirationTooOld``) → root valid (``unknown_root``) → issuer key
(``unknown_issuer``) → OPRF key (``unknown_rp``) → tree depth → the Groth16
check (injected: the gateway's proof pool) → the nullifier's Spend.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Collection, Container, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Protocol

from popgate.verifiers.bn254.encoding import parse_uint
from popgate.verifiers.bn254.fields import R
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.groth16 import PreparedKey, Proof, prepared_key, proof_from_compressed, verify
from popgate.verifiers.spend import Spend
from popgate.verifiers.worldid import (
    FOREVER,
    UnknownRoot,
    canonical_nullifier,
    encode_signal,
    hash_to_field,
    nullifier_spend,
)

#: The production ``minExpirationThreshold`` of ``WorldIDVerifier`` (5 hours).
EXPIRY_THRESHOLD = 18000.0
TREE_DEPTH = 30
U64 = 2**64


class Expired(VerificationError):
    """The credential expired more than the threshold ago."""

    reason = "credential_expired"


class UnknownIssuer(VerificationError):
    """No issuer key is registered for the proof's ``issuer_schema_id``."""

    reason = "unknown_issuer"


class UnknownRp(VerificationError):
    """No OPRF key is registered for the rp id."""

    reason = "unknown_rp"


class Chain(Protocol):
    """The chain facts a 4.0 proof is checked against (raise Overloaded when unknown)."""

    async def root_valid(self, root: int, now: float) -> bool: ...
    async def issuer_key(self, schema_id: int, now: float) -> tuple[int, int] | None: ...
    async def oprf_key(self, rp_id: int, now: float) -> tuple[int, int] | None: ...
    async def tree_depth(self, now: float) -> int: ...


@dataclass(frozen=True, slots=True)
class StaticChain:
    """Chain facts given as data (air-gapped gateways, ``popgate verify``, tests)."""

    roots: Container[int] | Callable[[int], bool]
    issuer_keys: Mapping[int, tuple[int, int]]
    oprf_keys: Mapping[int, tuple[int, int]]
    depth: int = TREE_DEPTH

    async def root_valid(self, root: int, now: float) -> bool:
        return self.roots(root) if callable(self.roots) else root in self.roots

    async def issuer_key(self, schema_id: int, now: float) -> tuple[int, int] | None:
        return self.issuer_keys.get(schema_id)

    async def oprf_key(self, rp_id: int, now: float) -> tuple[int, int] | None:
        return self.oprf_keys.get(rp_id)

    async def tree_depth(self, now: float) -> int:
        return self.depth


@dataclass(frozen=True, slots=True)
class Expect:
    """What popgate asked for: every public input the client does not choose."""

    rp_id: int  # uint64 (``rp_<16 hex>``)
    action: str
    nonce: int
    signal: str | bytes | None = None  # None: no signal requested (signal hash 0)
    now: float = 0.0
    threshold: float = EXPIRY_THRESHOLD
    schemas: Collection[int] = ()  # allowed issuer_schema_ids (empty: any)
    genesis_min: int = 0
    action_hash: int | None = None  # overrides hashSignal(action) (fixtures with an unknown preimage)
    signal_hash: int | None = None  # overrides the hash of ``signal`` (the dApp API: the item's own)

    def signal_field(self) -> int:
        return self.signal_hash if self.signal_hash is not None else signal_hash_v4(self.signal)

    def action_field(self) -> int:
        return self.action_hash if self.action_hash is not None else hash_to_field(self.action.encode())


def signal_hash_v4(signal: str | bytes | None) -> int:
    """The 4.0 ``signalHash``: 0 without a signal, else ``hashSignal`` of its bytes
    (``RequestItem::signal_hash`` in world-id-primitives)."""
    if signal is None:
        return 0
    return hash_to_field(encode_signal(signal))


def parse_rp_id(value: Any) -> int:
    """``rp_<16 hex>`` (IDKit), a decimal/hex string or an int → the uint64 rp id."""
    if isinstance(value, str) and value.startswith("rp_"):
        digits = value[3:]
        if len(digits) != 16 or not all(c in "0123456789abcdefABCDEF" for c in digits):
            raise Malformed(detail="rp_id: expected rp_ + 16 hex digits")
        return int(digits, 16)
    n = parse_uint(value, "rp_id")
    if n >= U64:
        raise Malformed(detail="rp_id: not a uint64")
    return n


def format_rp_id(rp_id: int) -> str:
    return f"rp_{rp_id:016x}"


@dataclass(frozen=True, slots=True)
class V4Item:
    """A parsed 4.0 response item (nothing verified yet)."""

    compressed: tuple[int, int, int, int]
    root: int
    nullifier: int
    schema_id: int
    expires_at_min: int
    identifier: str
    signal_hash: int | None


def _u64(item: Mapping[str, Any], name: str) -> int:
    raw = item.get(name)
    if isinstance(raw, bool) or raw is None:
        raise Malformed(detail=f"{name}: expected an integer")
    n = raw if isinstance(raw, int) else parse_uint(raw, name)
    if not 0 <= n < U64:
        raise Malformed(detail=f"{name}: not a uint64")
    return n


def is_v4_item(item: Any) -> bool:
    return isinstance(item, Mapping) and isinstance(item.get("proof"), list) and "merkle_root" not in item


def parse_item(item: Any) -> V4Item:
    """Parse one ``ResponseItemV4``; raise Malformed."""
    if not isinstance(item, Mapping):
        raise Malformed(detail="response item: expected an object")
    if "session_nullifier" in item:
        raise Malformed(detail="session proofs are not accepted (uniqueness proofs only)")
    proof = item.get("proof")
    if not isinstance(proof, list) or len(proof) != 5:
        raise Malformed(detail="proof: expected a list of 5 words")
    words = [parse_uint(w, "proof") for w in proof]
    if "nullifier" not in item:
        raise Malformed(detail="response item: missing nullifier")
    identifier = item.get("identifier", "")
    if not isinstance(identifier, str):
        raise Malformed(detail="identifier: expected a string")
    sh = item.get("signal_hash")
    return V4Item(
        (words[0], words[1], words[2], words[3]),
        words[4],
        parse_uint(item["nullifier"], "nullifier"),
        _u64(item, "issuer_schema_id"),
        _u64(item, "expires_at_min"),
        identifier,
        None if sh is None else parse_uint(sh, "signal_hash"),
    )


def public_inputs(
    it: V4Item, e: Expect, issuer: tuple[int, int], oprf: tuple[int, int], depth: int
) -> list[int]:
    """The 15 public inputs in ``WorldIDVerifier``'s order (session id 0: a uniqueness proof)."""
    return [
        it.nullifier,
        it.schema_id,
        issuer[0],
        issuer[1],
        it.expires_at_min,
        e.genesis_min,
        it.root,
        depth,
        e.rp_id,
        e.action_field(),
        oprf[0],
        oprf[1],
        e.signal_field(),
        e.nonce,
        0,
    ]


@dataclass(frozen=True, slots=True)
class VerifiedV4:
    """What a valid 4.0 proof establishes, and the nullifier to spend."""

    nullifier: str  # canonical form
    merkle_root: str
    identifier: str
    issuer_schema_id: int
    spend: Spend


ProofCheck = Callable[[Proof, list[int]], Awaitable[None]]


def _cheap_checks(it: V4Item, e: Expect) -> None:
    if it.nullifier >= R or it.root >= R:
        raise Malformed(detail="root or nullifier not a field element")
    if e.schemas and it.schema_id not in e.schemas:
        raise VerificationError("verification_level", f"issuer_schema_id {it.schema_id}")
    if it.signal_hash is not None and it.signal_hash != e.signal_field():
        raise VerificationError("invalid_proof", "signal_hash is not the requested signal's")
    if it.expires_at_min + e.threshold < e.now:
        raise Expired(detail=f"expires_at_min {it.expires_at_min}")


async def check(
    item: Any,
    expect: Expect,
    chain: Chain,
    verify_proof: ProofCheck,
    *,
    scope: str,
    ttl: float = FOREVER,
    limit: int = 1,
) -> VerifiedV4:
    """Verify one 4.0 response item against ``expect`` and ``chain`` (order: module
    doc); the nullifier's Spend is in ``scope`` (not spent here).

    Raises Malformed, ``credential_expired``, UnknownRoot, ``unknown_issuer``,
    ``unknown_rp``, InvalidProof, or Overloaded from the chain source."""
    it, now = parse_item(item), expect.now
    _cheap_checks(it, expect)
    if not await chain.root_valid(it.root, now):
        raise UnknownRoot(detail=f"root 0x{it.root:064x}")
    issuer = await chain.issuer_key(it.schema_id, now)
    if not issuer or not issuer[0] or not issuer[1]:
        raise UnknownIssuer(detail=f"issuer_schema_id {it.schema_id}")
    oprf = await chain.oprf_key(expect.rp_id, now)
    if not oprf:
        raise UnknownRp(detail=format_rp_id(expect.rp_id))
    depth = await chain.tree_depth(now)
    proof = proof_from_compressed(list(it.compressed))
    await verify_proof(proof, public_inputs(it, expect, issuer, oprf, depth))
    nullifier = canonical_nullifier(it.nullifier)
    spend = nullifier_spend(scope, "v4:" + nullifier, ttl, limit)
    return VerifiedV4(nullifier, f"0x{it.root:064x}", it.identifier, it.schema_id, spend)


@dataclass
class LocalProofCheck:
    """The Groth16 check in this process (``popgate verify``, tests)."""

    key: PreparedKey = field(default_factory=lambda: default_key())

    async def __call__(self, proof: Proof, public: list[int]) -> None:
        verify(self.key, proof, public)


@cache
def _key_file() -> Any:
    return json.loads((Path(__file__).parent / "data" / "worldid_v4_nullifier_proof.vk.json").read_text())


def key_json() -> dict[str, Any]:
    """The bundled 4.0 verifying key (snarkjs JSON, 15 public inputs)."""
    return dict(_key_file())


def default_key() -> PreparedKey:
    """The 4.0 production key, prepared (cached per process)."""
    return prepared_key(key_json())


def _pair(value: Any, what: str) -> tuple[int, int]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise Malformed(detail=f"{what}: expected [x, y]")
    return parse_uint(value[0], what), parse_uint(value[1], what)


def chain_from_json(obj: Any) -> StaticChain:
    """Chain facts as data: ``{"valid_roots": [...], "issuer_keys": {schema_id: [x, y]},
    "oprf_keys": {rp_id: [x, y]}, "tree_depth": 30}``; raise Malformed."""
    if not isinstance(obj, Mapping):
        raise Malformed(detail="chain: expected an object")
    roots, issuers, oprfs = obj.get("valid_roots", []), obj.get("issuer_keys", {}), obj.get("oprf_keys", {})
    if not isinstance(roots, list) or not isinstance(issuers, Mapping) or not isinstance(oprfs, Mapping):
        raise Malformed(detail="chain: valid_roots is a list, issuer_keys and oprf_keys are objects")
    depth = obj.get("tree_depth", TREE_DEPTH)
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 64:
        raise Malformed(detail="chain: tree_depth must be an integer 1..64")
    return StaticChain(
        frozenset(parse_uint(r, "valid_roots") for r in roots),
        {_u64({"id": k}, "id"): _pair(v, "issuer_keys") for k, v in issuers.items()},
        {parse_rp_id(k): _pair(v, "oprf_keys") for k, v in oprfs.items()},
        depth,
    )
