"""x402 on requests: a paid retry settles a pending Charge.

Per paid request: parse (400 when malformed) → :class:`ExactVerifier`
(offline EIP-712 + ecrecover; payers with code → facilitator ``/verify``),
then its ``spend`` reserves ``(network, from, nonce)`` once in the shared store, so of
any number of concurrent copies of one payment, across every gateway
sharing the store, one goes on → a durable record in the
:class:`SettlementQueue` → settlement:

* ``settle = "before"`` (default): settle first, then forward (the SDK's
  "upfront" flow): the origin is only reached by paid requests.
  ``settled`` → forward with ``PAYMENT-RESPONSE``; ``settlement_pending``
  (tx broadcast, receipt not yet seen) → forward, the worker reconciles;
  rejected → 402 with ``PAYMENT-RESPONSE`` ``success: false``. No answer
  (timeout, unreachable, 5xx) → 503 ``settlement_pending`` + Retry-After:
  the facilitator may still carry the settle out, so the record is *kept*
  (marked ambiguous; the worker keeps asking), the nonce stays reserved and
  the payment is *held* (``held:`` key: record id + payment digest). The
  client retries with the same payment: its nonce claim fails, the held
  record is found (same authorization and signature, else ``nonce_reused``)
  and probed once more: settled (``nonce_already_used`` on an ambiguous
  record counts as settled) → served exactly once (``served:`` claim; a
  third copy gets 402 ``nonce_reused``) with ``PAYMENT-RESPONSE``; still no
  answer → 503 ``settlement_pending`` again; rejected → 402 with the reason.
* ``settle = "after"``: the payer's unsettled debt (a store counter) must
  stay within ``debt_limit``; the record is written, the request forwarded
  at once and settled in the background (and by the worker, with retries).
  No ``PAYMENT-RESPONSE`` (the outcome is not known yet).

The worker (:mod:`gateway.payments.settlement`) retries what is left in the store,
so a crash or restart loses nothing owed.

Once the facilitator has answered (money moved, or a tx is broadcast) no store
failure refuses the request: the queue defers the bookkeeping to the worker
(:class:`SettlementQueue`), the request is served with ``PAYMENT-RESPONSE``. A
held payment whose ``served`` claim the store cannot take gets 503
``settlement_pending`` carrying the successful ``PAYMENT-RESPONSE``. A store
failure before the settle releases the nonce (503 ``store_unavailable``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from popgate.gateway.errors import Answered, GatewayError, StoreFailure
from popgate.gateway.payments.batch import BatchRail, batch_offers, payment_response_header
from popgate.gateway.payments.charges import route_price, with_ways
from popgate.gateway.payments.debt import debt_keys, is_known, known_key, raise_debt
from popgate.gateway.payments.facilitator import (
    DEBT_WINDOW,
    FacilitatorClient,
    FacilitatorError,
    PendingSettlement,
    SettlementQueue,
)
from popgate.gateway.payments.settlement import SettlementWorker
from popgate.gateway.payments.upto import UptoRail
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import Charge, Decision, WayOut
from popgate.gateway.registry import Services
from popgate.gateway.stores.base import StoreUnavailable, spend
from popgate.policies.model import Match
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.evm import CodeLookup, to_checksum_address
from popgate.verifiers.x402 import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    USDC,
    X_PAYMENT_RESPONSE,
    PaymentPayload,
    Requirements,
    SettleResult,
    encode_header,
    encode_payment_response,
    exact_requirements,
    extract,
    payment_required,
    select_offer,
)
from popgate.verifiers.x402_exact import (
    ExactPayment,
    ExactVerifier,
    nonce_key,
    nonce_spend,
    parse_authorization,
)

log = logging.getLogger("popgate.x402")


class FacilitatorUnavailable(GatewayError):
    status, reason, title = 503, "facilitator_unavailable", "Payment settlement unavailable"
    retry_after = 5.0


class SettlementPending(GatewayError):
    """The facilitator gave no answer; the payment is held, not released."""

    status, reason, title = 503, "settlement_pending", "Payment settlement pending"
    retry_after = 2.0

    def __init__(self, detail: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(
            detail, public="The payment is being settled. Retry with the same payment; do not sign a new one."
        )
        if retry_after is not None:
            self.retry_after = max(1.0, min(30.0, retry_after))


@dataclass(frozen=True, slots=True)
class HeldPayment(ExactPayment):
    """A payment presented again after 503 ``settlement_pending``: the very
    payment (same digest) of the settlement record ``item_id``."""

    item_id: int = 0


class X402Rail:
    """Verifies, reserves and settles x402 ``exact`` payments for a Charge."""

    def __init__(self, settings: Any, services: Services, meter: Any) -> None:
        self.settings = settings
        self.services = services
        self.meter = meter
        self._offers: dict[int, list[Requirements]] = {}
        self._verifier: ExactVerifier | None = None
        self._queue: SettlementQueue | None = None
        self._batch: BatchRail | None = None
        self._fac: FacilitatorClient | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._batch_ok: Any = None  # popgate_payments_total{rail="x402-batch",result="ok"}, once used
        self.upto = UptoRail(settings, services, meter, self._facilitator) if settings.upto else None
        self.worker = SettlementWorker(self.queue, services.clock, settings.settle_interval, services.metrics)
        self.claim_worker = (
            SettlementWorker(self.batch, services.clock, settings.batch.claim_interval, services.metrics)
            if settings.batch is not None
            else None
        )

    # -- set-up (lazy: the outbound session needs a running loop) ----------
    async def _ready(self) -> tuple[ExactVerifier, SettlementQueue]:
        if self._verifier is None or self._queue is None:
            session = await self.services.outbound()
            fac = FacilitatorClient(
                session,
                self.settings.facilitator,
                verify_timeout=self.settings.verify_timeout,
                settle_timeout=self.settings.settle_timeout,
            )
            code = CodeLookup(session, dict(self.settings.rpc)) if self.settings.rpc else None
            self._verifier = ExactVerifier(code_lookup=code, facilitator=fac)
            self._fac = fac
            queue = SettlementQueue(self.services.store, fac, backoff=self.settings.retry_backoff)
            self._queue = queue
            self.services.metrics.deferred_writes.set_function(lambda: len(queue.followups))
            if self.settings.batch is not None:
                self._batch = BatchRail(self.settings, self.services.store, fac)
        return self._verifier, self._queue

    async def _facilitator(self) -> tuple[FacilitatorClient, SettlementQueue]:
        _, queue = await self._ready()
        if self._fac is None:
            raise RuntimeError("facilitator client not set up")
        return self._fac, queue

    async def queue(self) -> SettlementQueue:
        return (await self._ready())[1]

    async def batch(self) -> BatchRail:
        """The batch-settlement rail (``[x402.batch]`` must be set)."""
        await self._ready()
        if self._batch is None:
            raise RuntimeError("batch-settlement is not configured")
        return self._batch

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await self.worker.stop()
        if self.claim_worker is not None:
            await self.claim_worker.stop()

    # -- offers ------------------------------------------------------------
    def offers(self, price: int) -> list[Requirements]:
        """``accepts[]`` for a price in atomic units (one per network; cached)."""
        got = self._offers.get(price)
        if got is None:
            s = self.settings
            got = []
            for net in s.networks:
                asset = s.assets.get(net) or USDC[net]
                usd = f"{price / 10**asset.decimals:.{asset.decimals}f}"
                got.append(
                    exact_requirements(
                        usd, net, s.pay_to, asset=asset, max_timeout_seconds=s.max_timeout_seconds
                    )
                )
            if s.batch is not None:
                got.extend(batch_offers(s, price))
            if len(self._offers) < 1024:  # prices come from the policy: a small set
                self._offers[price] = got
        return got

    def required_header(
        self,
        request: web.BaseRequest,
        offers: list[Requirements],
        error: str | None = None,
        description: str = "",
    ) -> str:
        return encode_header(
            payment_required(offers, url=str(request.url), error=error, description=description)
        )

    def way_out(
        self, ctx: Context, price: int, error: str | None = None, offers: list[Requirements] | None = None
    ) -> WayOut:
        offers = offers or self.offers(price) + self.upto_offers(ctx)
        header = self.required_header(ctx.request, offers, error)
        params: dict[str, Any] = {
            "scheme": "x402",
            "x402Version": 2,
            "price": price,
            "header": "PAYMENT-SIGNATURE",
            "accepts": [o.to_json() for o in offers],
        }
        if error:
            params["error"] = error
        return WayOut("pay", params, ((PAYMENT_REQUIRED, header),))

    def upto_offers(self, ctx: Context) -> list[Requirements]:
        """The route's ``upto`` offers (none off the configured routes, or on a
        forward-auth call: popgate would not see the answer to settle it)."""
        if self.upto is None or ctx.via_auth:
            return []
        return self.upto.offers(ctx.charge.route if ctx.charge is not None else ctx.route)

    def challenge_way_out(self, ctx: Context, match: Match | None) -> WayOut | None:
        """Way-out provider for plain challenges (policy ways include ``pay``)."""
        price = route_price(ctx, match)
        return self.way_out(ctx, self.settings.price if price is None else price)

    # -- per request -------------------------------------------------------
    def extract(self, headers: Mapping[str, str]) -> PaymentPayload | None:
        """The payment the request carries; raises Malformed (→ 400)."""
        return extract(headers, accept_v1=self.settings.accept_v1)

    async def verify(self, payment: PaymentPayload, offers: list[Requirements], now: float) -> ExactPayment:
        """Verify and reserve; VerificationError for a bad payment, 503s for
        an unreachable store (always closed) or facilitator."""
        verifier, _ = await self._ready()
        try:
            paid = await verifier.verify(payment, offers, now)
            await spend(self.services.store, paid.spend)  # reserve the nonce
        except StoreUnavailable as exc:
            self.services.metrics.store_errors.labels("payment").inc()
            raise StoreFailure(str(exc)) from None
        except FacilitatorError as exc:
            raise FacilitatorUnavailable(f"verify: {exc.detail}") from None
        except VerificationError as exc:
            # Its nonce is taken (or it expired meanwhile): is it a payment we
            # held after a settle without an answer? Then settle_first resumes it.
            if exc.reason not in ("nonce_reused", "expired"):
                raise
            held = await self._held(payment, offers)
            if held is None:
                raise
            paid = held
        self.services.metrics.evidence.labels("x402", "ok").inc()
        return paid

    async def _held(self, payment: PaymentPayload, offers: list[Requirements]) -> HeldPayment | None:
        try:
            req = select_offer(payment, offers)
            auth = parse_authorization(payment.payload)
        except VerificationError:
            return None
        payer, nonce = to_checksum_address(auth.from_), "0x" + auth.nonce.hex()
        _, queue = await self._ready()
        try:
            item_id = await queue.held(req.network, payer, nonce, payment.raw)
            if item_id is None and queue.followups:  # its hold may be among the deferred writes
                await queue.catch_up()
                item_id = await queue.held(req.network, payer, nonce, payment.raw)
        except StoreUnavailable as exc:
            self.services.metrics.store_errors.labels("payment").inc()
            raise StoreFailure(str(exc)) from None
        if item_id is None:
            return None
        spent = nonce_spend(req.network, auth.from_, auth.nonce, 1.0)  # reserved when first presented
        return HeldPayment(
            payer, req.network, auth.value, nonce, auth.valid_before, req, payment, "held", spent, item_id
        )

    async def settle_first(
        self, paid: ExactPayment, now: float, credit: tuple[str, str, str, str] | None = None
    ) -> SettleResult:
        """Durable record, then settle inline. Returns the result when
        settled or pending; VerificationError(``settlement_failed``) with
        ``.result`` when rejected; SettlementPending (record kept, payment
        held for a retry of the same payment) when the facilitator gave no
        answer. A :class:`HeldPayment` resumes its record instead. ``credit``:
        a credits top-up the record carries (:meth:`SettlementQueue.enqueue`)."""
        if isinstance(paid, HeldPayment):
            return await self._settle_held(paid, now)
        try:
            item = await self._enqueue(paid, now, credit=credit)
        except StoreFailure:
            await self._release(paid)  # nothing was sent: the same payment may come again
            raise
        _, queue = await self._ready()
        try:
            outcome, result = await queue.settle_now(item, now)
            self.services.metrics.settlements.labels(outcome).inc()
            if outcome in ("settled", "pending") and result is not None:
                return result
            if outcome == "failed" and result is not None:
                raise _settlement_failed(result)
            # No answer: the facilitator may still settle it. Keep the record
            # (the worker goes on asking) and the nonce; hold the payment.
            await queue.hold(item)
        except StoreUnavailable as exc:
            self.services.metrics.store_errors.labels("payment").inc()
            raise StoreFailure(str(exc)) from None
        raise SettlementPending(f"settle: {item.last_error or outcome}", retry_after=item.next_at - now)

    async def _settle_held(self, paid: HeldPayment, now: float) -> SettleResult:
        """The client came back with a held payment: settled → its one
        request (spend-once ``served`` claim); still open → probe the
        facilitator once more; rejected or dead → 402 with the reason."""
        _, queue = await self._ready()
        try:
            item = await queue.item(paid.item_id)
            if item is not None:
                outcome, result = await queue.probe(item, now)
                self.services.metrics.settlements.labels(outcome).inc()
                if outcome == "failed" and result is not None:
                    raise _settlement_failed(result)
                if outcome not in ("settled", "pending") or result is None:
                    raise SettlementPending(
                        f"held settle #{item.id}: {outcome}", retry_after=item.next_at - now
                    )
            else:
                dead = await queue.dead(paid.item_id)
                if dead is not None:
                    raise _settlement_failed(
                        SettleResult(
                            False,
                            dead.transaction,
                            dead.network,
                            dead.payer,
                            dead.last_error or "settle_failed",
                        )
                    )
                tx = await queue.receipt(paid.network, paid.payer, paid.nonce)
                if tx is None:
                    raise VerificationError("nonce_reused", "held payment's records expired")
                result = SettleResult(True, tx, paid.network, paid.payer)
        except StoreUnavailable as exc:
            self.services.metrics.store_errors.labels("payment").inc()
            raise StoreFailure(str(exc)) from None
        try:
            won = await queue.claim_served(paid.network, paid.payer, paid.nonce)
        except StoreUnavailable as exc:
            # Settled, but whether another copy was served is unknown: refuse
            # this copy with the receipt; the same payment is served once the
            # store answers (the served claim is what keeps it to one request).
            self.services.metrics.store_errors.labels("payment_settled").inc()
            pending = SettlementPending(f"held #{paid.item_id} settled, served claim: {exc}")
            header = PAYMENT_RESPONSE if paid.payment.version == 2 else X_PAYMENT_RESPONSE
            pending.headers = ((header, encode_payment_response(result)),)
            raise pending from None
        if not won:
            raise VerificationError("nonce_reused", "held payment already served")
        return result

    async def _enqueue(
        self,
        paid: ExactPayment,
        now: float,
        debts: tuple[str, ...] = (),
        credit: tuple[str, str, str, str] | None = None,
    ) -> PendingSettlement:
        _, queue = await self._ready()
        try:
            return await queue.enqueue(
                payload=paid.payment.raw,
                requirements=paid.requirements.for_facilitator(paid.payment.version),
                payer=paid.payer,
                network=paid.network,
                nonce=paid.nonce,
                valid_before=paid.valid_before,
                now=now,
                debt_keys=debts,
                amount=paid.amount,
                inline=True,
                known_key=known_key(paid.network, paid.payer) if debts else "",
                credit=credit,
            )
        except StoreUnavailable as exc:
            self.services.metrics.store_errors.labels("payment").inc()
            raise StoreFailure(str(exc)) from None

    async def _release(self, paid: ExactPayment, debts: tuple[str, ...] = ()) -> None:
        """Un-reserve a payment we refused after reserving it (never settled),
        and lower the ``debts`` counters raised for it."""
        from_ = bytes.fromhex(paid.payer[2:])
        nonce = bytes.fromhex(paid.nonce[2:])
        store = self.services.store
        try:
            for k in debts:
                await store.incr(k, -paid.amount, DEBT_WINDOW)
            await store.delete(nonce_key(paid.network, from_, nonce))
        except StoreUnavailable:
            pass  # the reservation expires at validBefore anyway, the debt with its window

    async def pay(self, ctx: Context, charge: Charge, payment: PaymentPayload) -> Decision | None:
        """Settle ``charge`` with ``payment``; None when paid (allowed)."""
        offers = self.offers(charge.price)
        if payment.scheme == "batch-settlement" and self.settings.batch is not None:
            return await self.pay_batch(ctx, charge, payment, offers)
        if payment.scheme == "upto" and self.upto is not None:
            return await self.pay_upto(ctx, charge, payment, self.upto)
        try:
            paid = await self.verify(payment, offers, ctx.now)
        except VerificationError as exc:
            self.services.metrics.evidence.labels("x402", exc.reason).inc()
            self.services.metrics.payments.labels("x402", exc.reason).inc()
            log.info("x402 payment rejected: %s (%s)", exc.reason, exc.detail)
            return with_ways(
                charge,
                (self.way_out(ctx, charge.price, exc.reason),),
                reason="payment_rejected",
                detail=f"The payment was not accepted: {exc.reason}.",
            )
        response_header = PAYMENT_RESPONSE if payment.version == 2 else X_PAYMENT_RESPONSE
        if self.settings.settle == "after" and not isinstance(paid, HeldPayment):
            refused = await self._pay_later(ctx, paid)
            if refused is not None:
                return with_ways(
                    charge,
                    (self.way_out(ctx, charge.price, refused),),
                    reason="payment_rejected",
                    detail=(
                        "Unsettled payments exceed the limit; retry later."
                        if refused == "debt_limit"
                        else f"The payment was not accepted: {refused}."
                    ),
                )
        else:
            try:
                result = await self.settle_first(paid, ctx.now)
            except VerificationError as exc:
                failed = exc.result if isinstance(exc, SettlementFailed) else None
                if failed is not None:
                    ctx.response_headers.append((response_header, encode_payment_response(failed)))
                self.services.metrics.payments.labels("x402", exc.reason).inc()
                detail = (
                    "Settlement failed."
                    if exc.reason == "settlement_failed"
                    else f"The payment was not accepted: {exc.reason}."
                )
                return with_ways(
                    charge,
                    (self.way_out(ctx, charge.price, exc.reason),),
                    reason="payment_rejected",
                    detail=detail,
                )
            ctx.response_headers.append((response_header, encode_payment_response(result)))
        ctx.response_headers.append(("Cache-Control", "private"))
        self.services.metrics.payments.labels("x402", "ok").inc()
        ctx.charged = charge.price
        ctx.charge = None
        if not ctx.subject:
            ctx.subject = f"x402:{paid.payer.lower()}"
        await self.meter.record("x402", charge.route, f"x402:{paid.payer.lower()}", charge.price)
        return None

    async def pay_batch(
        self, ctx: Context, charge: Charge, payment: PaymentPayload, offers: list[Requirements]
    ) -> Decision | None:
        """A batch-settlement voucher/deposit/refund (:mod:`gateway.payments.batch`)."""
        batch = self._batch or await self.batch()
        try:
            begun = await batch.pay(payment, offers, ctx.now)
        except StoreUnavailable as exc:
            self.services.metrics.store_errors.labels("payment").inc()
            raise StoreFailure(str(exc)) from None
        except FacilitatorError as exc:
            raise FacilitatorUnavailable(f"batch: {exc.detail}") from None
        except VerificationError as exc:
            self.services.metrics.payments.labels("x402-batch", exc.reason).inc()
            log.info("x402 batch payment rejected: %s (%s)", exc.reason, exc.detail)
            corrected = await batch.corrective(payment, offers, exc.reason)
            return with_ways(
                charge,
                (self.way_out(ctx, charge.price, exc.reason, corrected),),
                reason="payment_rejected",
                detail=f"The payment was not accepted: {exc.reason}.",
            )
        settled = payment_response_header(begun)
        if self._batch_ok is None:
            self._batch_ok = self.services.metrics.payments.labels("x402-batch", "ok")
        self._batch_ok.inc()
        d = begun.decision
        if d.kind == "refund":  # acknowledged here: a refund never reaches the origin
            body = {"message": "Refund acknowledged", "channelId": d.channel_id}
            headers = {PAYMENT_RESPONSE: settled, "Cache-Control": "no-store"}
            raise Answered(web.json_response(body, headers=headers))
        ctx.response_headers.append((PAYMENT_RESPONSE, settled))
        ctx.response_headers.append(("Cache-Control", "private"))
        charged = d.charged_after - d.charged_before
        ctx.charged, ctx.charge = charged, None
        subject = f"x402:{d.payer.lower()}"
        ctx.subject = ctx.subject or subject
        if charged:  # the tally goes out with the next group commit
            await self.meter.record("x402", charge.route, subject, charged, wait=False)
        return None

    async def pay_upto(
        self, ctx: Context, charge: Charge, payment: PaymentPayload, upto: UptoRail
    ) -> Decision | None:
        """An ``upto`` authorization (:mod:`gateway.payments.upto`): verified and
        reserved now, settled from the origin's usage report by the answer hook."""
        try:
            paid = await upto.authorize(ctx, charge.route, payment)
        except FacilitatorError as exc:
            raise FacilitatorUnavailable(f"upto verify: {exc.detail}") from None
        except VerificationError as exc:
            self.services.metrics.payments.labels("x402-upto", exc.reason).inc()
            log.info("x402 upto payment rejected: %s (%s)", exc.reason, exc.detail)
            return with_ways(
                charge,
                (self.way_out(ctx, charge.price, exc.reason),),
                reason="payment_rejected",
                detail=f"The payment was not accepted: {exc.reason}.",
            )
        ctx.response_headers.append(("Cache-Control", "private"))
        ctx.charge = None
        ctx.subject = ctx.subject or f"x402:{paid.payer.lower()}"
        return None

    async def _pay_later(self, ctx: Context, paid: ExactPayment) -> str | None:
        """Settle-after (:mod:`gateway.payments.debt`): a new payer is confirmed by
        the facilitator first; the unsettled debt stays within every cap; then the
        record is written and settled in the background. A refusal reason or None."""
        s, store = self.settings, self.services.store
        verifier, _ = await self._ready()
        keys = debt_keys(paid.network, paid.payer, ctx.network)
        try:
            if s.verify_new_payers and not await is_known(store, paid.network, paid.payer):
                await verifier.confirm(paid)
            if not await raise_debt(
                store, keys, (s.debt_limit, s.debt_limit_network, s.debt_limit_total), paid.amount
            ):
                await self._release(paid)
                self.services.metrics.payments.labels("x402", "debt_limit").inc()
                return "debt_limit"
        except StoreUnavailable as exc:
            self.services.metrics.store_errors.labels("payment").inc()
            await self._release(paid)
            raise StoreFailure(str(exc)) from None
        except FacilitatorError as exc:
            await self._release(paid)
            raise FacilitatorUnavailable(f"verify: {exc.detail}") from None
        except VerificationError as exc:
            await self._release(paid)
            self.services.metrics.payments.labels("x402", exc.reason).inc()
            log.info("x402 new payer refused by the facilitator: %s", exc.reason)
            return exc.reason
        try:
            item = await self._enqueue(paid, ctx.now, keys)
        except StoreFailure:
            await self._release(paid, keys)  # nothing was sent to the facilitator
            raise
        task = asyncio.get_running_loop().create_task(self._settle_background(item))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return None

    async def _settle_background(self, item: PendingSettlement) -> None:
        try:
            _, queue = await self._ready()
            outcome, _ = await queue.settle_now(item, self.services.clock())
            self.services.metrics.settlements.labels(outcome).inc()
        except Exception:
            log.exception("background settlement of %s failed", item.id)


class SettlementFailed(VerificationError):
    """The facilitator refused to settle; ``result`` is its answer."""

    result: SettleResult | None = None


def _settlement_failed(result: SettleResult) -> VerificationError:
    err = SettlementFailed("settlement_failed", result.error_reason or "")
    err.result = result
    return err
