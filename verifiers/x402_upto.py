"""x402 ``upto`` on EVM (Permit2 ``PermitWitnessTransferFrom``), offline.

The payer signs a *maximum* (``permitted.amount``); the server settles the
actual usage after the answer, never above it. Payload (the SDK's
``UptoPermit2Payload``)::

    {"permit2Authorization": {"from", "permitted": {"token", "amount"},
      "spender", "nonce", "deadline",
      "witness": {"to", "facilitator", "validAfter"}},
     "signature": "0x..."}

Check order (the SDK facilitator's, cheap and public first)::

    select_offer ─► shape ─► spender = x402UptoPermit2Proxy ─► witness.to = payTo
    ─► witness.facilitator = extra.facilitatorAddress ─► deadline / validAfter
    ─► permitted.amount = the offer's amount (the route's maximum) ─► token = asset
    ─► 65-byte signature: EIP-712 (Permit2 domain) ecrecover == from
    ─► the (network, from, nonce) Spend for the caller to claim once

Reasons: ``unsupported_scheme``, ``wrong_network``, ``requirements_mismatch``,
``malformed``, ``spender_mismatch``, ``payto_mismatch``,
``facilitator_mismatch``, ``expired``, ``not_yet_valid``, ``too_far_ahead``,
``amount_mismatch``, ``token_mismatch``, ``bad_signature``, ``high_s``; a
refused nonce claim is ``nonce_reused``. Other signatures (EIP-1271 /
ERC-6492 smart wallets) are left to the facilitator's ``/verify``, which the
gateway asks for every payment anyway (balance and Permit2 allowance).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.evm import recover_address, to_checksum_address
from popgate.verifiers.permit2 import UPTO_PROXY_ADDRESS, upto_digest
from popgate.verifiers.spend import Spend
from popgate.verifiers.x402 import Asset, PaymentPayload, Requirements, select_offer
from popgate.verifiers.x402_exact import chain_id

_ADDR = re.compile(r"0[xX][0-9a-fA-F]{40}")
_HEX = re.compile(r"0[xX](?:[0-9a-fA-F]{2}){1,4096}")
_UINT = re.compile(r"(?:0|[1-9][0-9]{0,77})")
SETTLE_MARGIN = 6  # seconds the deadline must stay ahead (the SDK facilitator's)
MAX_AHEAD_SKEW = 60  # how far the deadline may exceed now + maxTimeoutSeconds

# Facilitator invalidReason / errorReason codes (SDK mechanisms/evm/constants.py) → ours.
_REASONS = {
    "invalid_permit2_signature": "bad_signature",
    "invalid_permit2_spender": "spender_mismatch",
    "invalid_permit2_recipient_mismatch": "payto_mismatch",
    "upto_facilitator_mismatch": "facilitator_mismatch",
    "permit2_deadline_expired": "expired",
    "permit2_not_yet_valid": "not_yet_valid",
    "permit2_amount_mismatch": "amount_mismatch",
    "permit2_token_mismatch": "token_mismatch",
    "permit2_allowance_required": "permit2_allowance_required",
    "permit2_insufficient_balance": "insufficient_funds",
    "permit2_invalid_nonce": "nonce_reused",
    "invalid_upto_evm_payload_settlement_exceeds_amount": "amount_exceeds_max",
    "upto_amount_exceeds_permitted": "amount_exceeds_max",
    "invalid_upto_evm_network_mismatch": "wrong_network",
    "invalid_upto_evm_scheme": "unsupported_scheme",
}


def map_upto_reason(code: str | None) -> str:
    """A facilitator's upto reason code → our stable reason (``facilitator_rejected`` else)."""
    return _REASONS.get(code or "", "facilitator_rejected")


@dataclass(frozen=True, slots=True)
class Permit:
    """The upto Permit2 authorization with raw field values."""

    from_: bytes
    token: bytes
    amount: int
    spender: bytes
    nonce: int
    deadline: int
    to: bytes
    facilitator: bytes
    valid_after: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class UptoPayment:
    """A locally verified ``upto`` authorization (not yet reserved)."""

    payer: str  # EIP-55
    network: str
    max_amount: int  # permitted.amount: the most that may be settled
    nonce: int
    deadline: int
    requirements: Requirements
    payment: PaymentPayload
    signature_checked: bool  # False: a smart-wallet signature, for the facilitator to judge
    spend: Spend


def upto_requirements(
    max_amount: int,
    network: str,
    pay_to: str,
    asset: Asset,
    facilitator_address: str,
    max_timeout_seconds: int = 300,
) -> Requirements:
    """The ``upto`` offer for a route whose maximum is ``max_amount`` atomic units
    (the SDK server's ``extra``: ``assetTransferMethod``, token domain, ``facilitatorAddress``)."""
    return Requirements(
        "upto",
        network,
        asset.address,
        str(max_amount),
        pay_to,
        max_timeout_seconds,
        {
            "assetTransferMethod": "permit2",
            "name": asset.name,
            "version": asset.version,
            "facilitatorAddress": facilitator_address,
        },
    )


def _field(o: Mapping[str, Any], name: str, pattern: re.Pattern[str], where: str) -> str:
    v = o.get(name)
    if not isinstance(v, str) or not pattern.fullmatch(v):
        raise Malformed(detail=f"{where}.{name} is missing or badly formed")
    return v


def parse_permit(payload: Mapping[str, Any]) -> Permit:
    """Parse ``payload.permit2Authorization`` + ``signature``; raises Malformed."""
    auth, sig = payload.get("permit2Authorization"), payload.get("signature")
    if not isinstance(auth, dict) or not isinstance(sig, str) or not _HEX.fullmatch(sig):
        raise Malformed(detail="payload needs permit2Authorization{} and a hex signature")
    permitted, witness = auth.get("permitted"), auth.get("witness")
    if not isinstance(permitted, dict) or not isinstance(witness, dict):
        raise Malformed(detail="permit2Authorization needs permitted{} and witness{}")
    w = "permit2Authorization"
    return Permit(
        bytes.fromhex(_field(auth, "from", _ADDR, w)[2:]),
        bytes.fromhex(_field(permitted, "token", _ADDR, f"{w}.permitted")[2:]),
        int(_field(permitted, "amount", _UINT, f"{w}.permitted")),
        bytes.fromhex(_field(auth, "spender", _ADDR, w)[2:]),
        int(_field(auth, "nonce", _UINT, w)),
        int(_field(auth, "deadline", _UINT, w)),
        bytes.fromhex(_field(witness, "to", _ADDR, f"{w}.witness")[2:]),
        bytes.fromhex(_field(witness, "facilitator", _ADDR, f"{w}.witness")[2:]),
        int(_field(witness, "validAfter", _UINT, f"{w}.witness")),
        bytes.fromhex(sig[2:]),
    )


def _addr_of(text: Any) -> bytes:
    return bytes.fromhex(str(text)[2:]) if isinstance(text, str) and _ADDR.fullmatch(text) else b""


def check_terms(req: Requirements, p: Permit, now: float) -> None:
    """Spender, payee, facilitator, clock, amount and token; raises VerificationError."""
    if p.spender != bytes.fromhex(UPTO_PROXY_ADDRESS[2:]):
        raise VerificationError("spender_mismatch", "spender is not x402UptoPermit2Proxy")
    if p.to != _addr_of(req.pay_to):
        raise VerificationError("payto_mismatch", "witness.to != payTo")
    if p.facilitator != _addr_of(req.extra.get("facilitatorAddress")):
        raise VerificationError("facilitator_mismatch", "witness.facilitator != facilitatorAddress")
    if p.deadline < now + SETTLE_MARGIN:
        raise VerificationError("expired", f"deadline {p.deadline} <= now+margin")
    if p.valid_after > now:
        raise VerificationError("not_yet_valid", f"validAfter {p.valid_after} > now")
    if p.deadline > now + req.max_timeout_seconds + MAX_AHEAD_SKEW:
        raise VerificationError("too_far_ahead", f"deadline {p.deadline} too far ahead")
    if p.amount != int(req.amount):
        raise VerificationError("amount_mismatch", f"permitted {p.amount} != route maximum {req.amount}")
    if p.token != _addr_of(req.asset):
        raise VerificationError("token_mismatch", "permitted.token != asset")


def check_signature(req: Requirements, p: Permit) -> None:
    """Permit2 EIP-712 digest, low-s ecrecover, recovered == ``from``."""
    digest = upto_digest(
        chain_id(req.network),
        token=p.token,
        amount=p.amount,
        spender=p.spender,
        nonce=p.nonce,
        deadline=p.deadline,
        to=p.to,
        facilitator=p.facilitator,
        valid_after=p.valid_after,
    )
    if recover_address(digest, p.signature) != p.from_:
        raise VerificationError("bad_signature", "signer is not permit2Authorization.from")


def permit_spend(network: str, from_: bytes, nonce: int, ttl: float) -> Spend:
    """Reserve one Permit2 nonce of ``from_`` (Permit2 nonces are per owner,
    across tokens and spenders): ``permit2`` / ``{network}:{from}:{nonce}``."""
    ident = f"{network}:0x{from_.hex()}:{nonce}"
    return Spend("permit2", ident, ttl, 1, "nonce_reused", "Permit2 nonce already presented")


def verify_upto(payment: PaymentPayload, offered: list[Requirements], now: float) -> UptoPayment:
    """Verify ``payment`` against the route's offers at ``now``; raises VerificationError."""
    req = select_offer(payment, offered)
    if req.scheme != "upto" or payment.version != 2:
        raise VerificationError("unsupported_scheme", f"scheme {req.scheme!r}")
    p = parse_permit(payment.payload)
    check_terms(req, p, now)
    checked = len(p.signature) == 65
    if checked:
        check_signature(req, p)
    return UptoPayment(
        to_checksum_address(p.from_),
        req.network,
        p.amount,
        p.nonce,
        p.deadline,
        req,
        payment,
        checked,
        permit_spend(req.network, p.from_, p.nonce, max(1.0, p.deadline - now)),
    )
