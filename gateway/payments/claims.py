"""Claims in batches: the highest voucher per channel, submitted through the facilitator.

A channel is due when its unclaimed amount (``charged`` − ``claimed_q``)
reaches ``threshold``, when its oldest unclaimed charge is ``max_age``
seconds old, or when the payer started a timed withdrawal (``wra``) — claims
must land before ``withdrawDelay`` runs out. A round takes every due channel
(up to ``batch`` of them, one ``claim`` payload with one entry each: the
stored ``smax`` voucher and signature, claimed up to ``smax``, signed by the
receiver authorizer's key when configured: ``claimAuthorizerSignature``) to
``POST /settle``.

Crash safety (kill -9 anywhere): claims are *cumulative* (the contract moves
``maxClaimableAmount − totalClaimed``, never more), so re-submitting the same
voucher after a crash moves nothing twice. Per channel, in this order: write
the intent (``claiming`` = the voucher, its signature, ``claim_base`` = what
was claimed before) → submit → ledger entry (ref ``<channel>:<claiming>``,
amount ``claiming − claim_base``: identical on every retry, written once) →
raise ``claimed_q`` to ``claiming`` (only ever grows). A pending intent is
always finished before a newer voucher is claimed. The
ledger account ``x402-claims`` therefore sums to what the chain moved. A
per-round lease in the store (``claim`` of one key) keeps two gateways of a
fleet from submitting at once.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from popgate.gateway.payments.channels import ChannelBook, Fields
from popgate.gateway.payments.claim_signer import ClaimSigner
from popgate.gateway.payments.facilitator import FacilitatorClient
from popgate.gateway.stores.base import Store, key
from popgate.verifiers.x402_batch import chain_of

log = logging.getLogger("popgate.x402.claims")
ACCOUNT = "x402-claims"


@dataclass(frozen=True, slots=True)
class ClaimPolicy:
    threshold: int = 1_000_000  # atomic units unclaimed on one channel
    max_age: float = 3600.0
    withdraw_margin: float = 120.0
    batch: int = 100
    lease: float = 30.0


def unclaimed(rec: Fields) -> int:
    return int(rec.get("charged", "0")) - int(rec.get("claimed_q", "0"))


def due(rec: Fields, now: float, policy: ClaimPolicy) -> bool:
    if unclaimed(rec) <= 0 or "sig" not in rec:
        return False
    if unclaimed(rec) >= policy.threshold or now - float(rec.get("since", now)) >= policy.max_age:
        return True
    return int(rec.get("wra", "0")) > 0  # a withdrawal is running: claim now


def claim_payload(channel_id: str, rec: Fields, signer: ClaimSigner | None, chain_id: int) -> dict[str, Any]:
    """One ``claim`` entry: the voucher, claimed up to its amount (``totalClaimed``
    is the cumulative total the claim brings the channel to, as in the SDK), and
    the receiver authorizer's ``claimAuthorizerSignature`` when the key is set."""
    entry = {
        "voucher": {"channel": json.loads(rec["cfg"]), "maxClaimableAmount": rec["smax"]},
        "signature": rec["sig"],
        "totalClaimed": rec["smax"],
        "channelId": channel_id,
    }
    out: dict[str, Any] = {"type": "claim", "claims": [entry]}
    if signer is not None:
        smax = int(rec["smax"])
        out["claimAuthorizerSignature"] = signer.sign([(bytes.fromhex(channel_id[2:]), smax, smax)], chain_id)
    return out


class ClaimQueue:
    """Submits due claims; ``run_once`` is one round (the worker's unit)."""

    def __init__(
        self,
        book: ChannelBook,
        store: Store,
        facilitator: FacilitatorClient,
        offer: Any,
        policy: ClaimPolicy,
        signer: ClaimSigner | None = None,
    ) -> None:
        self.book, self.store, self.fac, self.offer, self.policy = book, store, facilitator, offer, policy
        self.signer = signer

    async def run_once(self, now: float) -> list[tuple[str, int]]:
        """Claim every due channel; returns ``(channel, amount)`` claimed."""
        if not await self.store.claim(key("x402-claims", "lease"), self.policy.lease):
            return []
        done: list[tuple[str, int]] = []
        try:
            for cid in await self.book.ids():
                rec = await self.book.get(cid)
                if rec is None or not due(rec, now, self.policy):
                    continue
                amount = await self.claim(cid, rec, now)
                if amount:
                    done.append((cid, amount))
                if len(done) >= self.policy.batch:
                    break
        finally:
            await self.store.delete(key("x402-claims", "lease"))
        return done

    async def claim(self, cid: str, rec: Fields, now: float) -> int:
        """Submit one channel's highest voucher; the amount newly claimed.

        The claim is first written down (``claiming``, ``claiming_sig``,
        ``claim_base``): after a crash the same voucher is re-submitted and
        its ledger entry (ref ``<channel>:<claiming>``, amount ``claiming −
        claim_base``) is the same however often it is retried.
        """
        if int(rec.get("claiming", "0")) > int(rec.get("claimed_q", "0")):
            smax, sig, base = rec["claiming"], rec["claiming_sig"], rec["claim_base"]
        else:
            smax, sig, base = rec["smax"], rec["sig"], rec.get("claimed_q", "0")
            if not await self.book.raise_field(cid, "claiming", smax, claiming_sig=sig, claim_base=base):
                return 0
        voucher = dict(rec, smax=smax, sig=sig, claimed_q=base)
        payload = claim_payload(cid, voucher, self.signer, chain_of(self.offer))
        body = {"x402Version": 2, "accepted": self.offer.to_json(), "payload": payload}
        result = await self.fac.settle(body, self.offer.to_json())
        if not result.success:
            log.warning("claim of a channel refused: %s", result.error_reason)
            return 0
        amount = int(smax) - int(base)
        await self.store.credit_ledger(ACCOUNT, amount, "topup", f"{cid}:{smax}", now)
        await self.book.raise_field(cid, "claimed_q", smax, since=str(now))
        return amount

    async def summary(self) -> dict[str, Any]:
        """Open channels and unclaimed amounts (the admin view)."""
        channels = []
        for cid in await self.book.ids():
            rec = await self.book.get(cid) or {}
            channels.append(
                {"channel": cid, "charged": rec.get("charged", "0"), "claimed": rec.get("claimed_q", "0")}
            )
        total = sum(int(c["charged"]) - int(c["claimed"]) for c in channels)
        return {
            "channels": channels,
            "unclaimed": str(total),
            "claimed": str(await self.store.balance(ACCOUNT)),
        }
