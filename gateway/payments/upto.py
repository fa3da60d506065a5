"""x402 ``upto`` on requests: authorize a maximum before, settle the usage after.

Before forwarding (:meth:`UptoRail.authorize`): the offline checks of
:func:`verifiers.x402_upto.verify_upto` (Permit2 EIP-712 signature, spender,
payee, facilitator, token, amount = the route's maximum, deadline), then the
Permit2 nonce is reserved once in the shared store (``nonce_reused`` for any
other copy, on any gateway), then the facilitator's ``/verify`` (balance,
Permit2 allowance, smart-wallet signatures), as the SDK server does. A
rejection there releases the reservation.

After the origin answers, before a byte of it is sent (``ctx.answer_hook``,
awaited by :mod:`gateway.http.proxy`):

* a status outside 2xx/3xx: nothing is settled (the authorization expires
  unused), the origin's answer goes out as is;
* the route's usage header missing, repeated, not a decimal integer, or
  usage × unit price above the authorized maximum: nothing is settled, the
  origin's body is dropped and the client gets 502 ``upstream_usage_invalid``
  / ``usage_exceeds_max`` (problem+json);
* otherwise ``actual`` is written to the durable settlement queue and settled
  at once (``paymentRequirements.amount = actual``, the SDK's upto settle):
  settled or pending → the answer with ``PAYMENT-RESPONSE`` (``amount``) and
  ``PoP-Charged: actual``; rejected → 402 ``settlement_failed`` with
  ``PAYMENT-RESPONSE`` ``success: false``, body dropped; no answer → the
  record stays queued (the settlement worker retries until the deadline) and
  the answer goes out with ``PoP-Charged`` and no ``PAYMENT-RESPONSE``.
  Zero usage settles nothing (``amount: "0"``, no transaction), as the SDK does.

The usage header is stripped from the answer: what the client is billed is in
``PAYMENT-RESPONSE`` and ``PoP-Charged``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from aiohttp import web

from popgate.gateway.errors import Answered, StoreFailure
from popgate.gateway.payments.facilitator import FacilitatorClient, FacilitatorError, SettlementQueue
from popgate.gateway.payments.upto_settings import UptoRoute
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.responses import problem
from popgate.gateway.registry import Services
from popgate.gateway.stores.base import StoreUnavailable, spend
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.x402 import (
    PAYMENT_RESPONSE,
    USDC,
    PaymentPayload,
    Requirements,
    SettleResult,
    encode_payment_response,
)
from popgate.verifiers.x402_upto import UptoPayment, map_upto_reason, upto_requirements, verify_upto

log = logging.getLogger("popgate.x402.upto")
_USAGE = re.compile(r"[0-9]{1,20}")
Ready = Callable[[], Awaitable[tuple[FacilitatorClient, SettlementQueue]]]


class UptoRail:
    """Offers, authorizes and settles ``upto`` payments on the configured routes."""

    def __init__(self, settings: Any, services: Services, meter: Any, ready: Ready) -> None:
        self.settings = settings
        self.routes: dict[str, UptoRoute] = dict(settings.upto.routes)
        self.services = services
        self.meter = meter
        self._ready = ready
        self._offers: dict[str, list[Requirements]] = {}

    def offers(self, route: str) -> list[Requirements]:
        """``upto`` entries of ``accepts[]`` for ``route`` (empty when not priced by usage)."""
        got = self._offers.get(route)
        if got is None:
            r, s = self.routes.get(route), self.settings
            got = []
            if r is not None:
                for net in s.networks:
                    asset = s.assets.get(net) or USDC[net]
                    fa = s.upto.facilitator_address
                    got.append(
                        upto_requirements(r.max_amount, net, s.pay_to, asset, fa, s.max_timeout_seconds)
                    )
            self._offers[route] = got
        return got

    async def authorize(self, ctx: Context, route: str, payment: PaymentPayload) -> UptoPayment:
        """Verify and reserve; arm the answer hook. VerificationError for a bad
        payment, StoreFailure / FacilitatorError when a dependency is down."""
        if ctx.via_auth:
            raise VerificationError("unsupported_scheme", "upto needs popgate inline (forward-auth call)")
        if "upgrade" in ctx.request.headers:
            raise VerificationError("unsupported_scheme", "upto cannot meter a protocol upgrade")
        paid = verify_upto(payment, self.offers(route), ctx.now)
        store = self.services.store
        try:
            await spend(store, paid.spend)
        except StoreUnavailable as exc:
            self.services.metrics.store_errors.labels("payment").inc()
            raise StoreFailure(str(exc)) from None
        fac, _ = await self._ready()
        try:
            result = await fac.verify(payment.raw, paid.requirements.to_json())
        except FacilitatorError:
            await self._release(paid)
            raise
        if not result.is_valid:
            await self._release(paid)
            raise VerificationError(
                map_upto_reason(result.invalid_reason), f"facilitator: {result.invalid_reason}"
            )
        rule = self.routes[route]

        async def on_answer(status: int, headers: list[tuple[str, str]]) -> None:
            await self.settle(ctx, route, rule, paid, status, headers)

        ctx.answer_hook = on_answer
        return paid

    async def _release(self, paid: UptoPayment) -> None:
        try:
            await self.services.store.delete(paid.spend.key)
        except StoreUnavailable:
            pass  # the reservation expires at the deadline anyway

    async def settle(
        self,
        ctx: Context,
        route: str,
        rule: UptoRoute,
        paid: UptoPayment,
        status: int,
        headers: list[tuple[str, str]],
    ) -> None:
        """The origin answered: bill its reported usage, or refuse the answer."""
        name = rule.usage_header.lower()
        reported = [v for k, v in headers if k.lower() == name]
        headers[:] = [(k, v) for k, v in headers if k.lower() != name]  # never shown to the client
        if not 200 <= status < 400:
            self._count("unbilled")
            log.info("upto: origin answered %d on %s: nothing settled", status, route)
            return
        if len(reported) != 1 or not _USAGE.fullmatch(reported[0].strip()):
            self._count("usage_invalid")
            log.warning("upto: origin's %s on %s missing or malformed: nothing settled", name, route)
            raise Answered(
                self._refusal(
                    ctx, "upstream_usage_invalid", "The origin's usage report is missing or malformed."
                )
            )
        actual = int(reported[0].strip()) * rule.unit_price
        if actual > paid.max_amount:
            self._count("usage_exceeds_max")
            log.warning(
                "upto: usage on %s costs %d > authorized %d: nothing settled", route, actual, paid.max_amount
            )
            raise Answered(
                self._refusal(ctx, "usage_exceeds_max", "The origin reported more usage than was authorized.")
            )
        result = await self._settle(paid, actual, ctx.now)
        if result is not None and not result.success and result.error_reason != "settlement_pending":
            self._count("settlement_failed")
            raise Answered(
                self._refusal(
                    ctx,
                    "settlement_failed",
                    "Settlement failed.",
                    status=402,
                    headers={PAYMENT_RESPONSE: encode_payment_response(result)},
                )
            )
        if result is not None:
            ctx.response_headers.append((PAYMENT_RESPONSE, encode_payment_response(result)))
        ctx.response_headers.append(("PoP-Charged", str(actual)))
        ctx.charged = actual
        self._count("ok")
        if actual:
            await self.meter.record("x402", route, f"x402:{paid.payer.lower()}", actual)

    async def _settle(self, paid: UptoPayment, actual: int, now: float) -> SettleResult | None:
        """Settle ``actual``: the result, or None when the facilitator gave no
        answer (the record stays queued for the worker)."""
        if actual == 0:
            return SettleResult(True, "", paid.network, paid.payer, amount="0")
        _, queue = await self._ready()
        requirements = replace(paid.requirements, amount=str(actual)).to_json()
        try:
            item = await queue.enqueue(
                payload=paid.payment.raw,
                requirements=requirements,
                payer=paid.payer,
                network=paid.network,
                nonce=f"permit2:{paid.nonce}",
                valid_before=paid.deadline,
                now=now,
                amount=actual,
                inline=True,
            )
            outcome, result = await queue.settle_now(item, now)
        except StoreUnavailable as exc:
            self.services.metrics.store_errors.labels("payment").inc()
            raise StoreFailure(str(exc)) from None
        self.services.metrics.settlements.labels(outcome).inc()
        if result is None:
            log.warning("upto: settlement #%s got no answer (%s): queued", item.id, item.last_error)
            return None
        return result if result.amount is not None else replace(result, amount=str(actual))

    def _count(self, outcome: str) -> None:
        self.services.metrics.payments.labels("x402-upto", outcome).inc()

    @staticmethod
    def _refusal(
        ctx: Context,
        reason: str,
        detail: str,
        *,
        status: int = 502,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        title = "Payment settlement failed" if status == 402 else "Bad usage report from the origin"
        return problem(ctx.request, status, reason, title, detail + " Nothing was charged.", headers=headers)
