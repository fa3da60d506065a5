"""One verification for every IDKit result popgate takes (exchange endpoint, and the
page and dApp API when they move to IDKit 4): :func:`verify_idkit`.

Input: an IDKit 2.x result, an IDKit 4.x result (``protocol_version`` "3.0" or
"4.0", ``responses[]``) or a single response item, plus :class:`Expectations`
(what popgate asked for) and :class:`Verifiers` (roots, chain facts, proof
checks, rp settings, cloud). Output: an :class:`Outcome` whose Spends the
caller claims (all of them: one refused claim refuses the result).

v3 and v4 nullifiers are tracked together: both live in one per-action scope
(the v3 external nullifier of app_id and action), v4 ones as ``v4:<nullifier>``
(the cloud path uses the same keys, so switching between cloud and local
verification opens no second claim). A result holding a v3 and a v4 item is
verified item by item and spends both nullifiers: the person behind it gets one
session, and neither nullifier can open another one later. A v3-only and a
v4-only proof of one person made separately cannot be linked (different secrets,
different nullifier functions): see the README.

4.0 locally needs ``[worldid.rp]`` (the nonce must be one popgate signed, for
this rp id and action, still within the rp_context ``ttl``; it is spent once)
and ``[worldid.chain]``; else ``cloud_verify_url``; else ``unsupported_protocol``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from popgate.gateway.schemes.worldid4_config import RpSettings
from popgate.gateway.schemes.worldid_roots import RootSource
from popgate.gateway.schemes.worldid_v4 import CloudVerifier
from popgate.verifiers import worldid, worldid_v4
from popgate.verifiers.bn254.encoding import parse_uint
from popgate.verifiers.bn254.fields import R
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.spend import Spend
from popgate.verifiers.worldid_rp import check_nonce, parse_nonce

ProofCheck = worldid_v4.ProofCheck
EMPTY_SIGNAL = worldid.signal_hash("")  # the v3 default signal_hash (v4's is 0)


@dataclass(frozen=True, slots=True)
class Expectations:
    """What popgate asked for."""

    app_id: str
    action: str
    signal: str | None  # None: no signal was requested
    now: float
    levels: frozenset[str] = frozenset()  # v3 verification levels allowed (empty: any)
    schemas: frozenset[int] = frozenset()  # v4 issuer_schema_ids allowed (empty: any)
    threshold: float = worldid_v4.EXPIRY_THRESHOLD
    ttl: float = worldid.FOREVER  # how long a spent nullifier is remembered
    limit: int = 1  # sessions per nullifier
    legacy: bool = True  # accept 3.0 proofs
    # True: each item's own ``signal_hash`` enters the proof (absent: the empty signal's), the
    # caller compares it with its signal (the dApp API, like the Portal); ``signal`` is unused.
    item_signals: bool = False


@dataclass(frozen=True, slots=True)
class Verifiers:
    """Where the facts and checks come from (the gateway injects pools and gates)."""

    roots: RootSource
    v3_check: ProofCheck
    v4_check: ProofCheck | None = None
    chain: worldid_v4.Chain | None = None
    rp: RpSettings | None = None
    cloud: CloudVerifier | None = None
    gate: Callable[[], Awaitable[None]] | None = None  # before a cloud call
    # "signed": the nonce must be one popgate issued (the exchange endpoint); "any": the caller
    # signed the rp_context itself (a dApp backend behind the verify API) and vouches for it.
    # Either way the nonce is spent once.
    nonces: str = "signed"


@dataclass(frozen=True, slots=True)
class Outcome:
    spends: list[Spend]
    scope: str
    nullifier: str  # the session subject's basis: "v4:0x…" when a 4.0 item was verified, else "0x…"
    versions: tuple[str, ...]


def split_items(result: Any) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(v3 items, v4 items) of a result; raise Malformed."""
    if not isinstance(result, Mapping):
        raise Malformed(detail="result: expected an object")
    items = result.get("responses", [result])
    if not isinstance(items, list) or not items:
        raise Malformed(detail="result: responses must be a non-empty list")
    v3 = [i for i in items if isinstance(i, Mapping) and "merkle_root" in i]
    v4 = [i for i in items if worldid_v4.is_v4_item(i)]
    if len(v3) + len(v4) != len(items):
        raise Malformed(detail="result: a response item is neither a 3.0 nor a 4.0 uniqueness item")
    if len(v3) > 1 or len(v4) > 1:
        raise Malformed(detail="result: at most one response item per protocol version")
    return v3, v4


def item_signal(item: Mapping[str, Any], default: int) -> int:
    """An item's own ``signal_hash`` (``default`` when absent); raise Malformed."""
    sh = item.get("signal_hash")
    if sh is None:
        return default
    n = parse_uint(sh, "signal_hash")
    if n >= R:
        raise Malformed(detail="signal_hash: not a field element")
    return n


def nonce_spend(nonce: int, ttl: float) -> Spend:
    return Spend("worldid-nonce", f"0x{nonce:064x}", ttl, 1, "replayed", "nonce already used")


async def _v4_local(
    result: Mapping[str, Any], item: Any, e: Expectations, v: Verifiers, scope: str
) -> list[Spend]:
    rp, chain, check = v.rp, v.chain, v.v4_check
    if rp is None or chain is None or check is None:
        raise VerificationError("unsupported_protocol", "4.0 without [worldid.rp] and [worldid.chain]")
    nonce = parse_nonce(result.get("nonce"))
    if v.nonces != "any":
        check_nonce(rp.nonce_keys, nonce, rp.rp_id, e.action, e.now, rp.ttl)
    given = item_signal(item, 0) if e.item_signals else None
    expect = worldid_v4.Expect(
        rp.rp_id, e.action, nonce, e.signal or None, e.now, e.threshold, e.schemas, signal_hash=given
    )
    out = await worldid_v4.check(item, expect, chain, check, scope=scope, ttl=e.ttl, limit=e.limit)
    # the nonce first: a replayed request must not use up one of the nullifier's sessions
    return [nonce_spend(nonce, rp.ttl + 120), out.spend]


async def _v4(result: Mapping[str, Any], item: Any, e: Expectations, v: Verifiers, scope: str) -> list[Spend]:
    if v.chain is not None:
        return await _v4_local(result, item, e, v, scope)
    if v.cloud is None:
        raise VerificationError("unsupported_protocol", "4.0 without [worldid.chain] or cloud_verify_url")
    if v.gate is not None:
        await v.gate()
    nullifier = await v.cloud.verify(dict(result))
    return [worldid.nullifier_spend(scope, "v4:" + nullifier, e.ttl, e.limit)]


async def verify_idkit(result: Any, e: Expectations, v: Verifiers) -> Outcome:
    """Verify every item of ``result`` against ``e`` (module doc); does not spend.

    Raises Malformed, VerificationError (``unsupported_protocol``,
    ``invalid_nonce``, ``invalid_proof``, ``unknown_root``, ``credential_expired``,
    ``unknown_issuer``, ``unknown_rp``, ``verification_level``) or Overloaded."""
    v3_items, v4_items = split_items(result)
    if v3_items and not e.legacy:
        raise VerificationError("unsupported_protocol", "legacy (3.0) proofs are not accepted")
    scope = worldid.nullifier_scope(e.app_id, e.action)
    spends: list[Spend] = []
    nullifier, versions = "", []
    if v4_items:
        spends += await _v4(result, v4_items[0], e, v, scope)
        nullifier, versions = spends[-1].ident.split(":", 1)[1], ["4.0"]  # the nullifier's Spend
    if v3_items:
        out = await worldid.check(
            v3_items[0],
            app_id=e.app_id,
            action=e.action,
            signal=e.signal or "",
            root_valid=lambda root: v.roots.is_valid(root, e.now),
            verify_proof=v.v3_check,
            levels=e.levels,
            ttl=e.ttl,
            limit=e.limit,
            given_signal_hash=item_signal(v3_items[0], EMPTY_SIGNAL) if e.item_signals else None,
        )
        spends.append(out.spend)
        nullifier, versions = nullifier or out.nullifier, [*versions, "3.0"]
    return Outcome(spends, scope, nullifier, tuple(versions))
