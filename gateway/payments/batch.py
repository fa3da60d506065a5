"""x402 ``batch-settlement`` on requests: offers, vouchers, PAYMENT-RESPONSE.

With ``[x402.batch]`` every x402 offer list gains one ``batch-settlement``
requirement per network (``extra``: ``receiverAuthorizer``,
``withdrawDelay``, ``minDeposit``, the token's ``name``/``version``). A paid
retry carrying a batch payload goes through :class:`VoucherDesk`: channel
lock (fleet-wide, ``channel_busy``), the local check
(:func:`verifiers.x402_batch.verify_batch`), deposits/refunds/EIP-1271
vouchers and stale mirrors through the facilitator, then the charged total
is committed **before** the request is forwarded (as ``exact`` settles
first): a voucher is counted once, and the origin only sees paid requests.

``PAYMENT-RESPONSE`` carries what the SDK clients read: ``transaction: ""``
for a voucher, ``extra.chargedAmount`` and ``extra.channelState`` (with
``chargedCumulativeAmount``).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from popgate.gateway.payments.channels import ChannelBook
from popgate.gateway.payments.claims import ClaimPolicy, ClaimQueue
from popgate.gateway.payments.facilitator import FacilitatorClient
from popgate.gateway.payments.voucher_cas import FastVouchers
from popgate.gateway.payments.vouchers import Begun, VoucherDesk
from popgate.gateway.stores.base import StoreUnavailable
from popgate.gateway.stores.redis import RedisStore
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.x402 import USDC, PaymentPayload, Requirements, SettleResult, select_offer
from popgate.verifiers.x402_batch import BatchConfig, BatchDecision, ChainView
from popgate.verifiers.x402_channel import (
    ERR_CUMULATIVE_MISMATCH,
    ERR_STATE_UNAVAILABLE,
    SCHEME,
    parse_payload,
)

log = logging.getLogger("popgate.x402.batch")


def batch_offers(settings: Any, price: int) -> list[Requirements]:
    """One batch-settlement requirement per configured network."""
    b = settings.batch
    out = []
    for net in settings.networks:
        asset = settings.assets.get(net) or USDC[net]
        extra: dict[str, Any] = {
            "receiverAuthorizer": b.receiver_authorizer,
            "withdrawDelay": b.withdraw_delay,
            "minDeposit": str(b.min_deposit if b.min_deposit is not None else price * 10),
            "name": asset.name,
            "version": asset.version,
        }
        out.append(
            Requirements(
                SCHEME, net, asset.address, str(price), settings.pay_to, settings.max_timeout_seconds, extra
            )
        )
    return out


def _view(extra: Mapping[str, Any] | None) -> ChainView:
    state = (extra or {}).get("channelState", extra or {})
    try:
        return ChainView.from_json(state if isinstance(state, dict) else {})
    except ValueError as exc:
        raise VerificationError(ERR_STATE_UNAVAILABLE, f"bad channel snapshot: {exc}") from None


class FacilitatorChain:
    """The chain as the facilitator shows it: ``/verify`` of a voucher reads
    the channel; ``/settle`` carries out deposits and refunds."""

    def __init__(self, facilitator: FacilitatorClient) -> None:
        self.fac = facilitator

    async def read(self, payment: PaymentPayload, offers: list[Requirements]) -> ChainView:
        req = select_offer(payment, offers)
        result = await self.fac.verify(payment.raw, req.to_json())
        if not result.is_valid:
            raise VerificationError(result.invalid_reason or ERR_STATE_UNAVAILABLE, "facilitator /verify")
        return _view(result.extra)

    async def execute(self, payment: PaymentPayload, decision: BatchDecision) -> tuple[ChainView, str]:
        if decision.kind == "voucher":  # an EIP-1271 payer: the facilitator checks the signature
            return await self.read(payment, [decision.requirements]), ""
        result = await self.fac.settle(payment.raw, decision.requirements.to_json())
        if not result.success:
            raise VerificationError(result.error_reason or "settlement_failed", "facilitator /settle")
        return _view(result.extra), result.transaction


def payment_response(begun: Begun) -> SettleResult:
    """The ``PAYMENT-RESPONSE`` of an accepted batch payment."""
    d, v = begun.decision, begun.view
    state = {
        "channelId": d.channel_id,
        "balance": str(v.balance),
        "totalClaimed": str(v.total_claimed),
        "withdrawRequestedAt": v.withdraw_requested_at,
        "refundNonce": str(v.refund_nonce),
        "chargedCumulativeAmount": str(d.charged_after),
    }
    extra: dict[str, Any] = {"channelState": state}
    if d.kind != "refund":
        extra["chargedAmount"] = str(d.charged_after - d.charged_before)
    return SettleResult(
        True, begun.transaction, d.requirements.network, d.payer.lower(), amount="", extra=extra
    )


def payment_response_header(begun: Begun) -> str:
    """``encode_payment_response(payment_response(begun))``, written straight
    as JSON text (every voucher's answer carries one): the same bytes."""
    d, v = begun.decision, begun.view
    charged = "" if d.kind == "refund" else f',"chargedAmount":"{d.charged_after - d.charged_before}"'
    text = (
        f'{{"success":true,"payer":"{d.payer.lower()}","transaction":{_json(begun.transaction)},'
        f'"network":{_json(d.requirements.network)},"amount":"","extra":{{"channelState":{{'
        f'"channelId":"{d.channel_id}","balance":"{v.balance}","totalClaimed":"{v.total_claimed}",'
        f'"withdrawRequestedAt":{v.withdraw_requested_at},"refundNonce":"{v.refund_nonce}",'
        f'"chargedCumulativeAmount":"{d.charged_after}"}}{charged}}}}}'
    )
    return base64.b64encode(text.encode()).decode("ascii")


def _json(s: str) -> str:
    return json.dumps(s, ensure_ascii=False)


class BatchRail:
    """Batch-settlement payments for the x402 rail, and their claim queue."""

    def __init__(self, settings: Any, store: Any, facilitator: FacilitatorClient) -> None:
        self.settings = settings
        b = settings.batch
        self.desk = VoucherDesk(
            ChannelBook(store), FacilitatorChain(facilitator), BatchConfig(b.claim_margin)
        )
        self.fast = FastVouchers(self.desk, store) if isinstance(store, RedisStore) else None
        policy = ClaimPolicy(b.claim_threshold, b.claim_max_age, float(b.claim_margin))
        offer = batch_offers(settings, 0)[0]
        self.claims = ClaimQueue(self.desk.book, store, facilitator, offer, policy, b.claim_signer)

    async def run_once(self, now: float) -> list[tuple[str, str]]:
        """One claim round, in the settlement worker's ``(id, outcome)`` shape."""
        return [(cid, "batch_claimed") for cid, _ in await self.claims.run_once(now)]

    async def corrective(
        self, payment: PaymentPayload, offers: list[Requirements], reason: str
    ) -> list[Requirements] | None:
        """On a cumulative mismatch: the offers with the server's channel
        state (``extra.channelState`` / ``voucherState``) so the client resyncs."""
        if reason != ERR_CUMULATIVE_MISMATCH:
            return None
        try:
            rec = await self.desk.book.get(parse_payload(payment.payload).channel_id)
        except (VerificationError, StoreUnavailable):
            return None
        if rec is None or "charged" not in rec:
            return None
        state = {
            "channelId": parse_payload(payment.payload).channel_id,
            "balance": rec.get("bal", "0"),
            "totalClaimed": rec.get("claimed", "0"),
            "withdrawRequestedAt": int(rec.get("wra", "0")),
            "refundNonce": rec.get("rnonce", "0"),
            "chargedCumulativeAmount": rec["charged"],
        }
        voucher = {"signedMaxClaimable": rec.get("smax", rec["charged"]), "signature": rec.get("sig", "0x")}
        return [
            replace(o, extra={**o.extra, "channelState": state, "voucherState": voucher})
            if o.scheme == SCHEME and o.network == payment.network
            else o
            for o in offers
        ]

    async def pay(self, payment: PaymentPayload, offers: list[Requirements], now: float) -> Begun:
        """Lock, verify and charge; raises VerificationError (nothing charged)."""
        if self.fast is not None:  # Redis: one round trip for a plain voucher
            return await self.fast.charge(payment, offers, now)
        begun = await self.desk.begin(payment, offers, now)
        if not await self.desk.finish(begun, True, now):
            raise VerificationError("invalid_batch_settlement_evm_channel_busy", "lock lost before commit")
        return begun
