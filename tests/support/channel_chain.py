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
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from x402.mechanisms.evm.batch_settlement.constants import (
    CLAIM_BATCH_TYPES,
    ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
    RECEIVE_AUTHORIZATION_TYPES,
)
from x402.mechanisms.evm.batch_settlement.encoding import build_erc3009_deposit_nonce
from x402.mechanisms.evm.batch_settlement.facilitator.utils import verify_batch_settlement_voucher_typed_data
from x402.mechanisms.evm.batch_settlement.types import ChannelConfig as SdkChannelConfig
from x402.mechanisms.evm.batch_settlement.utils import (
    coerce_bytes32,
    compute_channel_id,
    get_batch_settlement_eip712_domain,
)

from popgate.verifiers.evm import recover_address
from popgate.verifiers.x402 import PaymentPayload, Requirements
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
    unsigned_claims: int = 0  # claimWithSignature refused: no claimAuthorizerSignature
    badly_signed_claims: int = 0  # ...: signed, but not by the channels' receiverAuthorizer
    txs: int = 0

    def view(self, cid: str) -> ChainView:
        c = self.channels.get(cid.lower(), Channel())
        return ChainView(c.balance, c.total_claimed, c.withdraw_requested_at, c.refund_nonce)

    async def read(self, payment: PaymentPayload, offers: list[Requirements]) -> ChainView:
        self.reads += 1
        return self.view(str(payment.payload["voucher"]["channelId"]))

    async def execute(self, payment: PaymentPayload, d: BatchDecision) -> tuple[ChainView, str]:
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
        self.txs += 1
        return self.view(d.channel_id), f"0x{self.txs:064x}"

    def claim(
        self, cid: str, max_claimable: int, signature: bytes, chain_id: int, total: int | None = None
    ) -> int:
        """One entry of ``claimWithSignature``: the voucher's signature, then
        ``totalClaimed`` (default: the voucher's amount) raised to ``total``;
        returns the amount moved (0 when already claimed that far)."""
        c = self.channels[cid.lower()]
        total = max_claimable if total is None else total
        signer = recover_address(voucher_digest(bytes.fromhex(cid[2:]), max_claimable, chain_id), signature)
        if signer != c.payer_authorizer:
            raise ValueError("bad voucher signature")
        if total > max_claimable:
            raise ValueError("totalClaimed above the voucher")
        if total > c.balance:
            raise ValueError("claim above balance")
        moved = max(0, total - c.total_claimed)
        c.total_claimed += moved
        self.paid_out += moved
        self.claim_txs += 1
        return moved


# --- the facilitator stand-in's batch-settlement endpoints -----------------
# Checked with the SDK's own encoders (not popgate's verifier): channel id
# binding, the voucher's ECDSA signature, and the deposit's ERC-3009
# ReceiveWithAuthorization (to the deposit collector, nonce bound to the channel).


def _sdk_checks(body: dict[str, Any]) -> tuple[str | None, str, dict[str, Any]]:
    req, raw = body["paymentRequirements"], body["paymentPayload"]["payload"]
    cfg = SdkChannelConfig.from_dict(raw["channelConfig"])
    cid = str(raw["voucher"]["channelId"]).lower()
    if compute_channel_id(cfg, req["network"]).lower() != cid:
        return "invalid_batch_settlement_evm_channel_id_mismatch", cid, raw
    chain_id = int(req["network"].split(":")[1])
    if not verify_batch_settlement_voucher_typed_data(
        None,  # type: ignore[arg-type]
        cid,
        str(raw["voucher"]["maxClaimableAmount"]),
        cfg.payer_authorizer,
        cfg.payer,
        raw["voucher"]["signature"],
        chain_id,
    ):
        return "invalid_batch_settlement_evm_voucher_signature", cid, raw
    if raw["type"] == "deposit" and not _deposit_ok(req, raw, cid, chain_id):
        return "invalid_batch_settlement_evm_receive_authorization_signature", cid, raw
    return None, cid, raw


def _deposit_ok(req: dict[str, Any], raw: dict[str, Any], cid: str, chain_id: int) -> bool:
    a = raw["deposit"]["authorization"]["erc3009Authorization"]
    message = {
        "from": raw["channelConfig"]["payer"],
        "to": ERC3009_DEPOSIT_COLLECTOR_ADDRESS,
        "value": int(raw["deposit"]["amount"]),
        "validAfter": int(a["validAfter"]),
        "validBefore": int(a["validBefore"]),
        "nonce": coerce_bytes32(build_erc3009_deposit_nonce(cid, a["salt"])),
    }
    domain = {
        "name": req["extra"]["name"],
        "version": req["extra"]["version"],
        "chainId": chain_id,
        "verifyingContract": req["asset"],
    }
    signable = encode_typed_data(
        domain_data=domain, message_types=RECEIVE_AUTHORIZATION_TYPES, message_data=message
    )
    signer = Account.recover_message(signable, signature=bytes.fromhex(a["signature"][2:]))
    return bool(signer.lower() == raw["channelConfig"]["payer"].lower())


def _snapshot(chain: ChannelChain, cid: str) -> dict[str, Any]:
    c = chain.channels.get(cid, Channel())
    return {
        "channelId": cid,
        "balance": str(c.balance),
        "totalClaimed": str(c.total_claimed),
        "withdrawRequestedAt": c.withdraw_requested_at,
        "refundNonce": str(c.refund_nonce),
    }


def batch_verify(chain: ChannelChain, body: dict[str, Any]) -> dict[str, Any]:
    chain.reads += 1
    reason, cid, raw = _sdk_checks(body)
    payer = raw["channelConfig"]["payer"]
    if reason is None and raw["type"] == "voucher":
        c = chain.channels.get(cid)
        if c is None:
            reason = "invalid_batch_settlement_evm_channel_not_found"
        elif int(raw["voucher"]["maxClaimableAmount"]) > c.balance:
            reason = "invalid_batch_settlement_evm_cumulative_exceeds_balance"
    if reason is not None:
        return {"isValid": False, "invalidReason": reason, "payer": payer}
    return {"isValid": True, "payer": payer, "extra": _snapshot(chain, cid)}


def claim_authorizer(payload: dict[str, Any], network: str) -> str | None:
    """The address that signed ``claimAuthorizerSignature`` over the batch's
    ``ClaimBatch`` (the SDK's EIP-712 types and domain); None when unsigned."""
    sig = payload.get("claimAuthorizerSignature")
    if not sig:
        return None
    chain_id = int(network.split(":")[1])
    entries = [
        {
            "channelId": coerce_bytes32(
                compute_channel_id(SdkChannelConfig.from_dict(e["voucher"]["channel"]), network)
            ),
            "maxClaimableAmount": int(e["voucher"]["maxClaimableAmount"]),
            "totalClaimed": int(e["totalClaimed"]),
        }
        for e in payload["claims"]
    ]
    signable = encode_typed_data(
        domain_data=get_batch_settlement_eip712_domain(chain_id),
        message_types=CLAIM_BATCH_TYPES,
        message_data={"claims": entries},
    )
    return str(Account.recover_message(signable, signature=bytes.fromhex(str(sig)[2:])))


def batch_claim(chain: ChannelChain, body: dict[str, Any]) -> dict[str, Any]:
    """``claimWithSignature`` as the contract runs it: the batch signed by every
    channel's ``receiverAuthorizer`` (refused unsigned or signed by anyone
    else), each entry's voucher checked, claims cumulative and idempotent."""
    net = body["paymentRequirements"]["network"]
    payload = body["paymentPayload"]["payload"]

    def refuse(reason: str, message: str) -> dict[str, Any]:
        return {
            "success": False,
            "errorReason": reason,
            "errorMessage": message,
            "transaction": "",
            "network": net,
        }

    try:
        authorizer = claim_authorizer(payload, net)
    except (KeyError, ValueError, TypeError) as exc:
        return refuse("invalid_batch_settlement_evm_claim_payload", f"claim authorizer signature: {exc}")
    if authorizer is None:
        chain.unsigned_claims += 1
        return refuse("invalid_batch_settlement_evm_authorizer_not_configured", "claim batch not signed")
    for entry in payload["claims"]:
        if entry["voucher"]["channel"]["receiverAuthorizer"].lower() != authorizer.lower():
            chain.badly_signed_claims += 1
            return refuse(
                "invalid_batch_settlement_evm_claim_simulation_failed", "not the receiverAuthorizer"
            )
    moved = 0
    for entry in payload["claims"]:
        cfg = SdkChannelConfig.from_dict(entry["voucher"]["channel"])
        cid = compute_channel_id(cfg, net).lower()
        try:
            moved += chain.claim(
                cid,
                int(entry["voucher"]["maxClaimableAmount"]),
                bytes.fromhex(entry["signature"][2:]),
                int(net.split(":")[1]),
                int(entry["totalClaimed"]),
            )
        except (KeyError, ValueError) as exc:
            return refuse("invalid_batch_settlement_evm_claim_payload", str(exc))
    chain.txs += 1
    return {"success": True, "transaction": f"0x{chain.txs:064x}", "network": net, "amount": str(moved)}


def batch_settle(chain: ChannelChain, body: dict[str, Any]) -> dict[str, Any]:
    if body["paymentPayload"]["payload"].get("type") == "claim":
        return batch_claim(chain, body)
    reason, cid, raw = _sdk_checks(body)
    net, payer = body["paymentRequirements"]["network"], raw["channelConfig"]["payer"]
    if reason is None and raw["type"] not in ("deposit", "refund"):
        reason = "invalid_batch_settlement_evm_payload_type"
    if reason is not None:
        return {"success": False, "errorReason": reason, "transaction": "", "network": net, "payer": payer}
    c = chain.channels.setdefault(cid, Channel())
    c.payer_authorizer = bytes.fromhex(raw["channelConfig"]["payerAuthorizer"][2:])
    if raw["type"] == "deposit":
        c.balance += int(raw["deposit"]["amount"])
        c.withdraw_requested_at = 0
    else:
        amount = int(raw.get("amount") or c.balance - int(raw["voucher"]["maxClaimableAmount"]))
        c.balance -= amount
        c.refund_nonce += 1
        chain.refunded += amount
    chain.txs += 1
    tx = f"0x{chain.txs:064x}"
    return {
        "success": True,
        "transaction": tx,
        "network": net,
        "payer": payer,
        "extra": {"channelState": _snapshot(chain, cid)},
    }
