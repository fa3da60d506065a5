"""x402 ``batch-settlement`` vouchers checked locally: the one decision.

:func:`verify_batch` is the whole check the gateway (and ``popgate verify
x402-batch``) runs on a ``deposit`` / ``voucher`` / ``refund`` payload, given
the server's record of the channel and a view of the chain::

    select_offer ─► parse ─► channelId == EIP712Hash(channelConfig) on the offer's chain
    ─► config vs offer (receiver = payTo, receiverAuthorizer, token = asset,
       withdrawDelay, 900 s..30 d) ─► cumulative == charged (+ price unless refund)
    ─► withdraw window still open for a claim ─► minDeposit ─► ≤ balance
       (+ deposit), > totalClaimed ─► ECDSA (low-s) signer == payerAuthorizer
       (a zero payerAuthorizer = EIP-1271 payer: ``needs_facilitator``)

It returns a :class:`BatchDecision` whose ``charged_before`` the caller must
compare-and-set to ``charged_after`` in its store, atomically with the
channel's busy lock (``gateway.payments.channels``); that store step is the
only part not here. Deposits and refunds are carried out (and deposit
authorizations checked) by the facilitator.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from popgate.verifiers.errors import VerificationError
from popgate.verifiers.evm import parse_address, recover_address, to_checksum_address
from popgate.verifiers.x402 import PaymentPayload, Requirements, select_offer
from popgate.verifiers.x402_channel import (
    ERR_CHANNEL_ID_MISMATCH,
    ERR_CUMULATIVE_BELOW_CLAIMED,
    ERR_CUMULATIVE_EXCEEDS_BALANCE,
    ERR_CUMULATIVE_MISMATCH,
    ERR_DEPOSIT_BELOW_MIN,
    ERR_NETWORK_MISMATCH,
    ERR_RECEIVER_AUTHORIZER_MISMATCH,
    ERR_RECEIVER_MISMATCH,
    ERR_REFUND_AMOUNT_INVALID,
    ERR_STATE_UNAVAILABLE,
    ERR_TOKEN_MISMATCH,
    ERR_VOUCHER_SIGNATURE,
    ERR_WITHDRAW_DELAY_MISMATCH,
    ERR_WITHDRAW_DELAY_OUT_OF_RANGE,
    ERR_WITHDRAW_WINDOW,
    MAX_WITHDRAW_DELAY,
    MIN_WITHDRAW_DELAY,
    SCHEME,
    ZERO_ADDRESS,
    BatchPayload,
    channel_id,
    parse_payload,
    voucher_digest,
)


@dataclass(frozen=True, slots=True)
class ChainView:
    """The chain's view of a channel (mirrored, or read by the facilitator)."""

    balance: int = 0
    total_claimed: int = 0
    withdraw_requested_at: int = 0
    refund_nonce: int = 0
    pending_withdrawal: int = 0

    @classmethod
    def from_json(cls, o: Mapping[str, Any]) -> ChainView:
        return cls(
            _uint(o, "balance"),
            _uint(o, "totalClaimed"),
            _uint(o, "withdrawRequestedAt"),
            _uint(o, "refundNonce"),
            _uint(o, "pendingWithdrawalAmount"),
        )


@dataclass(frozen=True, slots=True)
class BatchDecision:
    """A voucher that passed every local check; ``charged_before`` →
    ``charged_after`` is what the store must compare-and-set."""

    kind: str  # deposit | voucher | refund
    payload: BatchPayload
    requirements: Requirements
    payer: str  # EIP-55
    charged_before: int
    charged_after: int
    needs_facilitator: bool  # EIP-1271 voucher (zero payerAuthorizer)

    @property
    def channel_id(self) -> str:
        return str(self.payload.channel_id)


@dataclass(frozen=True, slots=True)
class BatchConfig:
    """``claim_margin``: seconds a claim needs before a timed withdrawal
    completes (vouchers are refused once the window left is shorter)."""

    claim_margin: int = 120


def _uint(o: Mapping[str, Any], name: str) -> int:
    v = o.get(name, 0)
    if isinstance(v, bool) or not isinstance(v, int | str):
        raise ValueError(f"{name} must be an integer or decimal string")
    n = int(v)
    if n < 0:
        raise ValueError(f"{name} must be >= 0")
    return n


@lru_cache(maxsize=65536)
def _checksum(raw: bytes) -> str:
    return to_checksum_address(raw)


def chain_of(req: Requirements) -> int:
    ns, _, ref = req.network.partition(":")
    if ns != "eip155" or not ref.isdigit() or len(ref) > 18:
        raise VerificationError(ERR_NETWORK_MISMATCH, f"not an EVM network: {req.network!r}")
    return int(ref)


def _addr_extra(req: Requirements, name: str) -> bytes | None:
    v = req.extra.get(name)
    try:
        return parse_address(v) if isinstance(v, str) else None
    except ValueError:
        return None


def check_config(p: BatchPayload, req: Requirements) -> None:
    """The channel is ours: bound to this chain and this offer."""
    if channel_id(p.config, chain_of(req)) != p.voucher.channel_id:
        raise VerificationError(ERR_CHANNEL_ID_MISMATCH, "channelId != EIP712Hash(channelConfig)")
    if p.config.receiver != parse_address(req.pay_to):
        raise VerificationError(ERR_RECEIVER_MISMATCH, "receiver != payTo")
    authorizer = _addr_extra(req, "receiverAuthorizer")
    if authorizer in (None, ZERO_ADDRESS) or p.config.receiver_authorizer != authorizer:
        raise VerificationError(ERR_RECEIVER_AUTHORIZER_MISMATCH, "receiverAuthorizer differs")
    if p.config.token != parse_address(req.asset):
        raise VerificationError(ERR_TOKEN_MISMATCH, "token != asset")
    delay = req.extra.get("withdrawDelay")
    if delay is not None and str(p.config.withdraw_delay) != str(delay):
        raise VerificationError(ERR_WITHDRAW_DELAY_MISMATCH, "withdrawDelay differs from the offer")
    if not MIN_WITHDRAW_DELAY <= p.config.withdraw_delay <= MAX_WITHDRAW_DELAY:
        raise VerificationError(ERR_WITHDRAW_DELAY_OUT_OF_RANGE, "withdrawDelay out of range")


def expected_base(p: BatchPayload, price: int, charged: int | None) -> int:
    """The charged total before this request. Unknown channel: the SDK's
    inference (the voucher's amount less the price, never below 0)."""
    if charged is not None:
        return charged
    if p.kind == "refund":
        return p.voucher.max_claimable
    return max(0, p.voucher.max_claimable - price)


def check_amounts(p: BatchPayload, req: Requirements, view: ChainView, now: float, cfg: BatchConfig) -> None:
    """Withdraw window, minimum deposit, balance and totalClaimed bounds."""
    if view.withdraw_requested_at:
        closes = view.withdraw_requested_at + p.config.withdraw_delay
        if now + cfg.claim_margin >= closes and p.kind != "refund":
            raise VerificationError(ERR_WITHDRAW_WINDOW, "a withdrawal completes before a claim could")
    balance = view.balance
    if p.kind == "deposit":
        floor = req.extra.get("minDeposit")
        if floor is not None and p.deposit_amount < int(str(floor)):
            raise VerificationError(ERR_DEPOSIT_BELOW_MIN, "deposit below minDeposit")
        balance += p.deposit_amount
    if p.voucher.max_claimable > balance:
        raise VerificationError(ERR_CUMULATIVE_EXCEEDS_BALANCE, "voucher above the channel balance")
    if p.kind != "refund" and p.voucher.max_claimable <= view.total_claimed:
        raise VerificationError(ERR_CUMULATIVE_BELOW_CLAIMED, "voucher not above totalClaimed")
    if p.refund_amount is not None and p.refund_amount > balance - p.voucher.max_claimable:
        raise VerificationError(ERR_REFUND_AMOUNT_INVALID, "refund above the unclaimed balance")


def check_signature(p: BatchPayload, req: Requirements) -> bool:
    """ECDSA against payerAuthorizer; returns True when the payer is a
    contract (zero payerAuthorizer) and only EIP-1271 can tell."""
    if p.config.payer_authorizer == ZERO_ADDRESS:
        return True
    digest = voucher_digest(p.voucher.channel_id, p.voucher.max_claimable, chain_of(req))
    try:
        signer = recover_address(digest, p.voucher.signature)
    except VerificationError as exc:
        raise VerificationError(ERR_VOUCHER_SIGNATURE, exc.reason) from exc
    if signer != p.config.payer_authorizer:
        raise VerificationError(ERR_VOUCHER_SIGNATURE, "signer is not payerAuthorizer")
    return False


def verify_batch(
    payment: PaymentPayload,
    offered: list[Requirements],
    charged: int | None,
    view: ChainView | None,
    now: float,
    cfg: BatchConfig | None = None,
    parsed: BatchPayload | None = None,
) -> BatchDecision:
    """Check one batch-settlement payment; ``charged`` is the server's
    charged total for the channel (None when it has no record), ``view``
    the fresh chain view (None: unknown, refused unless it is a first deposit).
    ``parsed``: ``parse_payload(payment.payload)`` when the caller has it.
    Raises VerificationError with the scheme's wire code."""
    req = select_offer(payment, [r for r in offered if r.scheme == SCHEME] or offered)
    p = parse_payload(payment.payload) if parsed is None else parsed
    check_config(p, req)
    price = int(req.amount)
    base = expected_base(p, price, charged)
    after = base if p.kind == "refund" else base + price
    if p.voucher.max_claimable != after:
        raise VerificationError(ERR_CUMULATIVE_MISMATCH, "voucher base differs from the server's")
    if view is None:
        if p.kind != "deposit":
            raise VerificationError(ERR_STATE_UNAVAILABLE, "no channel state")
        view = ChainView()
    check_amounts(p, req, view, now, cfg or BatchConfig())
    remote = check_signature(p, req)
    payer = _checksum(p.config.payer)
    return BatchDecision(p.kind, p, req, payer, base, after, remote)
