"""The batch-settlement contract's channel accounting, kept as the contract would.

No local EVM chain is used (no hardhat/anvil package ships the
x402BatchSettlement bytecode here): this class keeps per channel
``balance``, ``totalClaimed``, ``withdrawRequestedAt`` and ``refundNonce`` and
applies deposits, cumulative claims (idempotent: a claim only moves
``totalClaimed`` up to the voucher's ``maxClaimableAmount``, never past the
balance) and refunds with the contract's rules. The facilitator stand-in
serves it over HTTP; in-process tests call it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from popgate.verifiers.evm import recover_address
from popgate.verifiers.x402_batch import BatchDecision, ChainView
from popgate.verifiers.x402_channel import voucher_digest


@dataclass
class Channel:
    balance: int = 0
    total_claimed: int = 0
    withdraw_requested_at: int = 0
    refund_nonce: int = 0
    payer_authorizer: bytes = b""


@dataclass
class ChannelChain:
    channels: dict[str, Channel] = field(default_factory=dict)
    paid_out: int = 0  # sum of every claim transferred to the receiver
    refunded: int = 0
    reads: int = 0
    claim_txs: int = 0

    def view(self, cid: str) -> ChainView:
        c = self.channels.get(cid.lower(), Channel())
        return ChainView(c.balance, c.total_claimed, c.withdraw_requested_at, c.refund_nonce)

    async def read(self, cid: str, network: str) -> ChainView:
        self.reads += 1
        return self.view(cid)

    async def execute(self, d: BatchDecision) -> ChainView:
        c = self.channels.setdefault(d.channel_id.lower(), Channel())
        c.payer_authorizer = d.payload.config.payer_authorizer
        if d.kind == "deposit":
            c.balance += d.payload.deposit_amount
            c.withdraw_requested_at = 0
        elif d.kind == "refund":
            amount = d.payload.refund_amount or c.balance - d.charged_after
            c.balance -= amount
            c.refund_nonce += 1
            self.refunded += amount
        return self.view(d.channel_id)

    def claim(self, cid: str, max_claimable: int, signature: bytes, chain_id: int) -> int:
        """``claimWithSignature`` for one voucher; returns the amount moved."""
        c = self.channels[cid.lower()]
        signer = recover_address(voucher_digest(bytes.fromhex(cid[2:]), max_claimable, chain_id), signature)
        if signer != c.payer_authorizer:
            raise ValueError("bad voucher signature")
        if max_claimable > c.balance:
            raise ValueError("claim above balance")
        moved = max(0, max_claimable - c.total_claimed)
        c.total_claimed += moved
        self.paid_out += moved
        self.claim_txs += 1
        return moved
