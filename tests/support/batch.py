"""Real batch-settlement payloads made by the official x402 SDK client.

:class:`Payer` wraps ``x402.mechanisms.evm.batch_settlement.client``'s
``BatchSettlementEvmScheme`` (its own EIP-712 signing, channel config and
cumulative bookkeeping) and turns its payloads into ``PAYMENT-SIGNATURE``
header values for our offers.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from eth_account import Account
from x402.mechanisms.evm.batch_settlement.client import BatchSettlementEvmScheme
from x402.mechanisms.evm.batch_settlement.client.voucher import sign_voucher
from x402.mechanisms.evm.batch_settlement.utils import compute_channel_id
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import PaymentRequirements

from popgate.verifiers.x402 import USDC, Requirements

NETWORK = "eip155:84532"
PAY_TO = "0x" + "22" * 20
RECEIVER_AUTHORIZER_KEY = "0x" + "33" * 32  # signs the claim batches in tests
RECEIVER_AUTHORIZER = Account.from_key(RECEIVER_AUTHORIZER_KEY).address


def offer(
    price: int = 1000, *, network: str = NETWORK, delay: int = 900, min_deposit: int | None = None
) -> Requirements:
    extra: dict[str, Any] = {
        "receiverAuthorizer": RECEIVER_AUTHORIZER,
        "withdrawDelay": delay,
        "name": "USDC",
        "version": "2",
    }
    if min_deposit is not None:
        extra["minDeposit"] = str(min_deposit)
    return Requirements("batch-settlement", network, USDC[NETWORK].address, str(price), PAY_TO, 300, extra)


def header(req: Requirements, payload: dict[str, Any]) -> str:
    body = {"x402Version": 2, "payload": payload, "accepted": req.to_json(), "resource": {"url": "http://t/"}}
    return base64.b64encode(json.dumps(body).encode()).decode()


class Payer:
    """One agent wallet; ``key`` picks the wallet (deterministic)."""

    def __init__(self, key: int = 0x11) -> None:
        raw = "0x" + f"{key:02x}" * 32 if key < 0x100 else "0x" + f"{key:064x}"
        self.account = Account.from_key(raw)
        self.client = BatchSettlementEvmScheme(EthAccountSigner(self.account))

    def sdk_payload(self, req: Requirements) -> dict[str, Any]:
        """What the SDK client sends next for ``req`` (deposit first)."""
        return self.client.create_payment_payload(PaymentRequirements(**req.to_json()))

    def channel_id(self, req: Requirements) -> str:
        cfg = self.client.build_channel_config(PaymentRequirements(**req.to_json()))
        return compute_channel_id(cfg, req.network)

    def voucher(
        self, req: Requirements, cumulative: int, *, kind: str = "voucher", channel: str | None = None
    ) -> dict[str, Any]:
        """A hand-built payload signed by this wallet for ``cumulative``."""
        cfg = self.client.build_channel_config(PaymentRequirements(**req.to_json()))
        cid = channel or compute_channel_id(cfg, req.network)
        v = sign_voucher(EthAccountSigner(self.account), cid, cumulative, req.network)
        return {"type": kind, "channelConfig": cfg.to_dict(), "voucher": v.to_dict()}
