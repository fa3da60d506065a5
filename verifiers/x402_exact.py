"""x402 ``exact`` on EVM (EIP-3009 ``transferWithAuthorization``), offline.

Check order (cheap and public first, the nonce last)::

    select_offer ─► payload shape ─► payTo ─► amount ─► clock ─► route
      route = EOA:   EIP-712 digest ─► ecrecover (low-s) ─► == from
      route = code:  facilitator /verify (EIP-1271 / ERC-6492 smart wallets)
    ─► return the (network, from, nonce) Spend for the caller to claim once

Every failure raises :class:`VerificationError` with a stable reason:
``unsupported_scheme``, ``wrong_network``, ``requirements_mismatch``,
``malformed``, ``payto_mismatch``, ``amount_mismatch``, ``expired``,
``not_yet_valid``, ``too_far_ahead``, ``bad_signature``, ``high_s``,
``smart_wallet_unsupported`` (payer has code and no facilitator is
configured), ``rpc_unavailable``, or a facilitator reason
(:func:`map_invalid_reason`). No store here: the payment's ``spend`` reserves
its nonce (``pg:{x402:<network>:<from>:<nonce>}`` until ``validBefore``); a
refused claim is ``nonce_reused``.

Payer routing: without a :class:`~verifiers.evm.CodeLookup` every 65-byte
signature is treated as an EOA's (documented risk: an EIP-7702 delegated EOA
passes here and may fail at settlement). With one, an address with code goes
to the facilitator; when the RPC is down and a facilitator exists, the
facilitator decides (it checks code itself), otherwise ``rpc_unavailable``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from popgate.verifiers.eip712 import Domain, transfer_digest
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.evm import CodeLookup, RpcError, recover_address, to_checksum_address
from popgate.verifiers.spend import Spend, key
from popgate.verifiers.x402 import USDC, PaymentPayload, Requirements, select_offer

_ADDR = re.compile(r"0[xX][0-9a-fA-F]{40}")
_B32 = re.compile(r"0[xX][0-9a-fA-F]{64}")
_HEX = re.compile(r"0[xX](?:[0-9a-fA-F]{2}){1,4096}")
_UINT = re.compile(r"(?:0|[1-9][0-9]{0,77})")
_ERC6492_MAGIC = bytes.fromhex("64926492" * 8)


@dataclass(frozen=True, slots=True)
class ExactConfig:
    """Clock policy. ``settle_margin``: seconds ``validBefore`` must stay
    ahead of now (the SDK facilitator uses 6). ``max_ahead_skew``: how far
    ``validBefore`` may exceed ``now + maxTimeoutSeconds`` (our own cap; the
    SDK has none)."""

    settle_margin: int = 6
    max_ahead_skew: int = 60

    def __post_init__(self) -> None:
        if self.settle_margin < 0 or self.max_ahead_skew < 0:
            raise ValueError("margins must be >= 0")


@dataclass(frozen=True, slots=True)
class Authorization:
    """The EIP-3009 authorization with raw field values."""

    from_: bytes
    to: bytes
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes
    signature: bytes


@dataclass(frozen=True, slots=True)
class ExactPayment:
    """A verified, reserved ``exact`` payment (the attestation)."""

    payer: str  # EIP-55
    network: str
    amount: int
    nonce: str  # 0x + 64 hex, lower case
    valid_before: int
    requirements: Requirements
    payment: PaymentPayload
    verified_by: str  # "offline" | "facilitator"
    spend: Spend  # reserves the nonce: claim once (``nonce_reused`` when taken)


# Facilitator invalidReason codes (SDK mechanisms/evm/constants.py) → our reasons.
_REASONS = {
    "invalid_exact_evm_payload_signature": "bad_signature",
    "invalid_exact_evm_failed_to_verify_signature": "bad_signature",
    "invalid_exact_evm_payload_undeployed_smart_wallet": "bad_signature",
    "eip6492_factory_not_allowed": "bad_signature",
    "invalid_exact_evm_payload_recipient_mismatch": "payto_mismatch",
    "invalid_exact_evm_payload_authorization_value_mismatch": "amount_mismatch",
    "invalid_exact_evm_payload_authorization_valid_before": "expired",
    "invalid_exact_evm_payload_authorization_valid_after": "not_yet_valid",
    "invalid_exact_evm_nonce_already_used": "nonce_reused",
    "invalid_exact_evm_insufficient_balance": "insufficient_funds",
    "network_mismatch": "wrong_network",
    "unsupported_scheme": "unsupported_scheme",
    "missing_eip712_domain": "requirements_mismatch",
}


def map_invalid_reason(code: str | None) -> str:
    """Map a facilitator ``invalidReason``/``errorReason`` to our stable reason
    (``facilitator_rejected`` for anything unknown)."""
    return _REASONS.get(code or "", "facilitator_rejected")


class Facilitator(Protocol):
    async def verify(self, payload: Mapping[str, Any], requirements: Mapping[str, Any]) -> Any: ...


def parse_authorization(payload: Mapping[str, Any]) -> Authorization:
    """Parse ``payload.authorization`` + ``payload.signature``; raises Malformed
    (or ``unsupported_scheme`` for a Permit2 payload)."""
    if "permit2Authorization" in payload:
        raise VerificationError("unsupported_scheme", "permit2 exact payloads not accepted")
    auth, sig = payload.get("authorization"), payload.get("signature")
    if not isinstance(auth, dict) or not isinstance(sig, str) or not _HEX.fullmatch(sig):
        raise Malformed(detail="payload needs authorization{} and a hex signature")
    fields = {}
    for name, pattern in (
        ("from", _ADDR),
        ("to", _ADDR),
        ("value", _UINT),
        ("validAfter", _UINT),
        ("validBefore", _UINT),
        ("nonce", _B32),
    ):
        v = auth.get(name)
        if not isinstance(v, str) or not pattern.fullmatch(v):
            raise Malformed(detail=f"authorization.{name} is missing or badly formed")
        fields[name] = v
    return Authorization(
        bytes.fromhex(fields["from"][2:]),
        bytes.fromhex(fields["to"][2:]),
        int(fields["value"]),
        int(fields["validAfter"]),
        int(fields["validBefore"]),
        bytes.fromhex(fields["nonce"][2:]),
        bytes.fromhex(sig[2:]),
    )


def chain_id(network: str) -> int:
    """``eip155:8453`` → 8453; raises ``wrong_network`` for anything else."""
    ns, _, ref = network.partition(":")
    if ns != "eip155" or not ref.isdigit() or len(ref) > 18:
        raise VerificationError("wrong_network", f"not an EVM network: {network!r}")
    return int(ref)


def domain_for(req: Requirements) -> Domain:
    """The EIP-712 domain of the offered asset: name/version from the
    offer's ``extra`` (falling back to the USDC table), chainId from the
    network, verifyingContract = asset."""
    default = USDC.get(req.network)
    name = req.extra.get("name", default.name if default else None)
    version = req.extra.get("version", default.version if default else None)
    if not isinstance(name, str) or not isinstance(version, str):
        raise VerificationError("requirements_mismatch", "offer lacks an EIP-712 domain")
    return Domain(name, version, chain_id(req.network), req.asset)


def check_terms(req: Requirements, auth: Authorization, now: float, cfg: ExactConfig) -> None:
    """Payee, amount and clock checks (no crypto). Raises VerificationError."""
    if auth.to != bytes.fromhex(req.pay_to[2:]):
        raise VerificationError("payto_mismatch", "authorization.to != payTo")
    if auth.value != int(req.amount):
        raise VerificationError("amount_mismatch", f"value {auth.value} != {req.amount}")
    if auth.valid_before < now + cfg.settle_margin:
        raise VerificationError("expired", f"validBefore {auth.valid_before} <= now+margin")
    if auth.valid_after > now:
        raise VerificationError("not_yet_valid", f"validAfter {auth.valid_after} > now")
    if auth.valid_before > now + req.max_timeout_seconds + cfg.max_ahead_skew:
        raise VerificationError("too_far_ahead", f"validBefore {auth.valid_before} too far")


def check_signature(req: Requirements, auth: Authorization) -> None:
    """EIP-712 digest, low-s ecrecover, recovered == ``from``; raises
    ``bad_signature`` / ``high_s``."""
    digest = transfer_digest(
        domain_for(req), auth.from_, auth.to, auth.value, auth.valid_after, auth.valid_before, auth.nonce
    )
    if recover_address(digest, auth.signature) != auth.from_:
        raise VerificationError("bad_signature", "signer is not authorization.from")


def nonce_key(network: str, from_: bytes, nonce: bytes) -> str:
    """Store key reserving one EIP-3009 authorization: ``x402`` /
    ``{network}:{from}:{nonce}`` (lower-case hex)."""
    return key("x402", nonce_ident(network, from_, nonce))


def nonce_ident(network: str, from_: bytes, nonce: bytes) -> str:
    """The identifier of one EIP-3009 authorization in the ``x402`` namespace."""
    return f"{network}:0x{from_.hex()}:0x{nonce.hex()}"


def nonce_spend(network: str, from_: bytes, nonce: bytes, ttl: float) -> Spend:
    """Reserve one authorization for ``ttl`` seconds (``nonce_reused`` when taken)."""
    ident = nonce_ident(network, from_, nonce)
    return Spend("x402", ident, ttl, 1, "nonce_reused", "authorization nonce already presented")


class ExactVerifier:
    """Verifies ``exact`` EVM payments; each says which nonce to reserve.

    Built once at start-up; ``verify`` is the per-request entry point.
    """

    __slots__ = ("_cfg", "_code", "_facilitator")

    def __init__(
        self,
        cfg: ExactConfig | None = None,
        *,
        code_lookup: CodeLookup | None = None,
        facilitator: Facilitator | None = None,
    ) -> None:
        self._cfg = cfg or ExactConfig()
        self._code = code_lookup
        self._facilitator = facilitator

    async def verify(self, payment: PaymentPayload, offered: list[Requirements], now: float) -> ExactPayment:
        """Verify ``payment`` against the route's offers at time ``now``.

        Raises VerificationError (see module docstring for reasons).
        """
        req = select_offer(payment, offered)
        if req.scheme != "exact":
            raise VerificationError("unsupported_scheme", f"scheme {req.scheme!r}")
        auth = parse_authorization(payment.payload)
        check_terms(req, auth, now, self._cfg)
        if await self._needs_facilitator(req, auth, now):
            by = await self._facilitator_verify(payment, req)
        else:
            check_signature(req, auth)
            by = "offline"
        ttl = max(1.0, auth.valid_before - now)
        spend = nonce_spend(req.network, auth.from_, auth.nonce, ttl)
        return ExactPayment(
            to_checksum_address(auth.from_),
            req.network,
            auth.value,
            "0x" + auth.nonce.hex(),
            auth.valid_before,
            req,
            payment,
            by,
            spend,
        )

    async def confirm(self, paid: ExactPayment) -> ExactPayment:
        """A second opinion from the facilitator's ``/verify`` (balance, nonce on
        chain, smart-wallet signatures) on a payment verified offline. Raises
        VerificationError with the facilitator's reason."""
        if paid.verified_by == "facilitator":
            return paid
        by = await self._facilitator_verify(paid.payment, paid.requirements)
        return replace(paid, verified_by=by)

    async def _needs_facilitator(self, req: Requirements, auth: Authorization, now: float) -> bool:
        smart_sig = len(auth.signature) != 65 or auth.signature.endswith(_ERC6492_MAGIC)
        has_code = smart_sig
        if not smart_sig and self._code is not None and self._code.supports(req.network):
            try:
                has_code = await self._code.has_code(req.network, auth.from_, now)
            except RpcError:
                if self._facilitator is None:
                    raise
                has_code = True  # the facilitator checks code itself
        if has_code and self._facilitator is None:
            if smart_sig:
                raise VerificationError("bad_signature", "not a 65-byte EOA signature")
            raise VerificationError("smart_wallet_unsupported", "payer has code")
        return has_code

    async def _facilitator_verify(self, payment: PaymentPayload, req: Requirements) -> str:
        if self._facilitator is None:
            raise RuntimeError("facilitator verification without a facilitator")
        result = await self._facilitator.verify(payment.raw, req.for_facilitator(payment.version))
        if not result.is_valid:
            raise VerificationError(
                map_invalid_reason(result.invalid_reason), f"facilitator: {result.invalid_reason}"
            )
        return "facilitator"
