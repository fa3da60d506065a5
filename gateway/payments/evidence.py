"""Payments as evidence: the Extract stage pulls a request's payment out like any other scheme.

What a request may carry, in the order the rails take it: an x402 payment (``PAYMENT-SIGNATURE``,
or ``X-PAYMENT`` with ``[x402] accept_v1``), a popgate API key (``Authorization: Bearer pgk_…``),
or a pay-per-crawl price header (``crawler-exact-price`` / ``crawler-max-price``). Extraction
is pure and cheap (header look-ups and, for x402, decoding the header); a payment is not
checked in the Verify stage: it is settled by :class:`~gateway.payments.fees.PaymentEnforcer`
only when the policy charged the request, against that price.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web

from popgate.gateway.payments.ledger import bearer_key
from popgate.verifiers.errors import Malformed
from popgate.verifiers.paypercrawl import CRAWLER_EXACT_PRICE, CRAWLER_MAX_PRICE
from popgate.verifiers.x402 import PaymentPayload, extract

NAME = "payment"


@dataclass(frozen=True, slots=True)
class Payment:
    """The payment a request carries: an x402 payload (or why its header could not be
    decoded), an API key, or a crawler's price header."""

    rail: str  # "x402" | "credits" | "crawler"
    x402: PaymentPayload | None = None
    malformed: str | None = None  # x402 only: the header is there but undecodable
    api_key: str | None = None


class PaymentScheme:
    """Extract-only evidence (see :attr:`gateway.registry.Registry.deferred`)."""

    __slots__ = ("accept_v1", "crawlers", "credits", "x402")
    name = NAME

    def __init__(self, *, x402: bool, accept_v1: bool, credits: bool, crawlers: bool) -> None:
        self.x402 = x402
        self.accept_v1 = accept_v1
        self.credits = credits
        self.crawlers = crawlers

    def extract(self, request: web.BaseRequest) -> Payment | None:
        headers = request.headers
        if self.x402:
            try:
                payload = extract(headers, accept_v1=self.accept_v1)
            except Malformed as exc:
                return Payment("x402", malformed=exc.detail or "undecodable")
            if payload is not None:
                return Payment("x402", x402=payload)
        if self.credits:
            api_key = bearer_key(headers.get("Authorization"))
            if api_key is not None:
                return Payment("credits", api_key=api_key)
            if self.crawlers and (CRAWLER_EXACT_PRICE in headers or CRAWLER_MAX_PRICE in headers):
                return Payment("crawler")
        return None


def payment_of(evidence: dict[str, Any]) -> Payment | None:
    """The payment the Extract stage found, if any."""
    found = evidence.get(NAME) if evidence else None
    return found if isinstance(found, Payment) else None
