"""A batch-settlement payment on a request: lock, verify, serve, charge.

:class:`VoucherDesk` runs the gateway's whole voucher path over a
:class:`~gateway.payments.channels.ChannelBook`:

1. read the channel id (the payload parses), take the channel's busy lock
   (``invalid_batch_settlement_evm_channel_busy`` when another request, on
   any gateway sharing the store, holds it);
2. the chain view: the record's mirror when synced within ``fresh_for``
   seconds, else ``chain.read`` (the facilitator); none → refused;
3. :func:`verifiers.x402_batch.verify_batch`, the same function
   ``popgate verify x402-batch`` runs; deposits, refunds and EIP-1271
   vouchers then go to ``chain.execute`` (the facilitator);
4. after the origin answered, :meth:`finish` commits the charged total (only
   while the lock is still ours) or releases the lock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from popgate.gateway.payments.channels import ChannelBook, Reservation
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.x402 import PaymentPayload, Requirements, select_offer
from popgate.verifiers.x402_batch import BatchConfig, BatchDecision, ChainView, check_config, verify_batch
from popgate.verifiers.x402_channel import ERR_CHANNEL_BUSY, ERR_STATE_UNAVAILABLE, SCHEME, parse_payload


class Chain(Protocol):
    """The facilitator's side: read a channel, carry out what ECDSA cannot."""

    async def read(self, payment: PaymentPayload, offers: list[Requirements]) -> ChainView: ...

    async def execute(self, payment: PaymentPayload, decision: BatchDecision) -> tuple[ChainView, str]: ...


@dataclass(frozen=True, slots=True)
class Begun:
    decision: BatchDecision
    reservation: Reservation
    view: ChainView
    synced: bool  # the view came from the chain just now
    transaction: str = ""  # the facilitator's tx (deposit, refund)


def view_of(fields: Mapping[str, str], now: float, fresh_for: float) -> ChainView | None:
    """The record's chain mirror when synced within ``fresh_for`` seconds."""
    synced = fields.get("synced")
    if synced is None or now - float(synced) > fresh_for:
        return None
    return ChainView(
        int(fields.get("bal", "0")),
        int(fields.get("claimed", "0")),
        int(fields.get("wra", "0")),
        int(fields.get("rnonce", "0")),
    )


def fresh_for(withdraw_delay: int) -> float:
    """The SDK's freshness bound: withdrawDelay / 3, clamped to 30 s..5 min."""
    return min(300.0, max(30.0, withdraw_delay / 3))


class VoucherDesk:
    """Batch-settlement payments against one channel book."""

    def __init__(self, book: ChannelBook, chain: Chain | None = None, cfg: BatchConfig | None = None) -> None:
        self.book, self.chain, self.cfg = book, chain, cfg or BatchConfig()

    async def begin(self, payment: PaymentPayload, offers: list[Requirements], now: float) -> Begun:
        """Lock and verify; raises VerificationError (lock released)."""
        p = parse_payload(payment.payload)
        # bound to this offer before any store write: garbage never creates records or locks
        check_config(p, select_offer(payment, [o for o in offers if o.scheme == SCHEME] or offers))
        ttl = min(600.0, max(5.0, float(offers[0].max_timeout_seconds) if offers else 5.0))
        res = await self.book.reserve(p.channel_id, os.urandom(12).hex(), now, ttl)
        if res is None:
            raise VerificationError(ERR_CHANNEL_BUSY, "another request holds the channel")
        try:
            return await self._check(payment, offers, res, now, p.config.withdraw_delay)
        except BaseException:
            await self.book.release(res)
            raise

    async def _check(
        self, payment: PaymentPayload, offers: list[Requirements], res: Reservation, now: float, delay: int
    ) -> Begun:
        view = view_of(res.fields, now, fresh_for(delay))
        synced = False
        if view is None and self.chain is not None and payment.payload.get("type") != "deposit":
            view, synced = await self.chain.read(payment, offers), True
        if view is None and payment.payload.get("type") != "deposit":
            raise VerificationError(ERR_STATE_UNAVAILABLE, "no fresh channel state")
        decision = verify_batch(payment, offers, res.charged(), view, now, self.cfg)
        if decision.kind != "voucher" or decision.needs_facilitator:
            if self.chain is None:
                raise VerificationError(ERR_STATE_UNAVAILABLE, "no facilitator for this payload")
            view, tx = await self.chain.execute(payment, decision)
            return Begun(decision, res, view, True, tx)
        return Begun(decision, res, view or ChainView(), synced)

    async def finish(self, begun: Begun, served: bool, now: float) -> bool:
        """Charge (``served``) or only keep the fresh chain view and release;
        False when the lock was lost meanwhile (nothing written)."""
        d = begun.decision
        if not served and not begun.synced:
            await self.book.release(begun.reservation)
            return True
        values: dict[str, str] = {}
        if served:
            values.update(charged=str(d.charged_after), smax=str(d.payload.voucher.max_claimable))
            values["sig"] = "0x" + d.payload.voucher.signature.hex()
            if "cfg" not in begun.reservation.fields:  # first charge: what a claim needs later
                values["cfg"] = json.dumps(d.payload.config.to_json(), sort_keys=True)
                values["net"] = d.requirements.network
            if "since" not in begun.reservation.fields:
                values["since"] = str(now)  # the claim queue's age clock
        if begun.synced:
            v = begun.view
            values.update(bal=str(v.balance), claimed=str(v.total_claimed), wra=str(v.withdraw_requested_at))
            values.update(rnonce=str(v.refund_nonce), synced=str(now))
        return await self.book.commit(begun.reservation, values)
