"""Prepaid credits on requests: API keys and pay-per-crawl crawlers.

* ``Authorization: Bearer pgk_...``: the key's hash is looked up in the store
  (cached briefly in process) and compared in constant time; the account
  ``key:<key id>`` is debited atomically with a ledger entry.
* Pay-per-crawl: a Web Bot Auth crawler (class ``verified-agent``) that
  sends ``crawler-exact-price`` / ``crawler-max-price`` is billed to the
  account ``crawler:<subject>``; success carries ``crawler-charged``, every
  failure a ``crawler-error`` code.

Billing rule: only served requests are billed: a 2xx upstream answer, or a
WebSocket upgrade that succeeded (``101``: the socket was opened to the origin;
the hook runs when it closes). A failed upgrade (the origin refused it: 502) is
refunded like any other non-2xx. We debit
*before* forwarding (so no request is ever served without a debit, and a
short balance never reaches the origin) and refund with a ``refund`` ledger
entry (ref ``refund:<debit ref>``, idempotent) from an ``after_response``
hook when the answer is not 2xx. A crash between the upstream answer and the
refund leaves the debit standing (the client is over-billed, never the
operator); the ledger still reconciles.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from decimal import Decimal
from typing import Any

from aiohttp import web

from popgate.gateway.errors import BadRequest, Forbidden, StoreFailure, Unauthorized
from popgate.gateway.payments.charges import route_price, with_ways
from popgate.gateway.payments.ledger import BadApiKey, check_api_key, key_id_of
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import Charge, Decision, WayOut
from popgate.gateway.registry import Services
from popgate.gateway.stores.base import StoreUnavailable, key
from popgate.policies.model import Match
from popgate.verifiers.paypercrawl import (
    CRAWLER_CHARGED,
    CRAWLER_ERROR,
    CRAWLER_EXACT_PRICE,
    CRAWLER_MAX_PRICE,
    CRAWLER_PRICE,
    CrawlerPriceError,
    accept_offer,
    format_price,
)

log = logging.getLogger("popgate.credits")
TOPUP_PATH = "/.well-known/popgate/credits/topup"
KEY_CACHE_SECONDS = 30.0


def account_of_key(key_id: str) -> str:
    return f"key:{key_id}"


def crawler_account(subject: str) -> str:
    return f"crawler:{subject}"


def usd(atomic: int) -> Decimal:
    return Decimal(atomic).scaleb(-6)


class CreditsRail:
    """Debits Charges from prepaid accounts."""

    def __init__(self, settings: Any, services: Services, meter: Any) -> None:
        self.settings = settings
        self.services = services
        self.meter = meter
        self._keys: dict[str, tuple[bytes | None, float]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)

    # -- ways out ----------------------------------------------------------
    def ways_out(self, ctx: Context, price: int, balance: int | None = None) -> list[WayOut]:
        params: dict[str, Any] = {
            "header": "Authorization: Bearer <api key>",
            "price": price,
            "topup": TOPUP_PATH,
            "topup_amounts": list(self.settings.topup_amounts),
        }
        if balance is not None:
            params["balance"] = balance
        ways = [WayOut("credits", params)]
        if self.settings.crawlers:
            ways.append(
                WayOut(
                    "pay-per-crawl",
                    {"price": format_price(usd(price))},
                    ((CRAWLER_PRICE, format_price(usd(price))),),
                )
            )
        return ways

    def challenge_way_out(self, ctx: Context, match: Match | None) -> WayOut | None:
        return self.ways_out(ctx, route_price(ctx, match) or 0)[0]

    # -- keys --------------------------------------------------------------
    async def stored_hash(self, key_id: str, now: float) -> bytes | None:
        hit = self._keys.get(key_id)
        if hit is not None and hit[1] > now:
            return hit[0]
        try:
            stored = await self.services.store.get(key("apikey", key_id))
        except StoreUnavailable as exc:
            self.services.metrics.store_errors.labels("debit").inc()
            raise StoreFailure(str(exc)) from None
        if len(self._keys) > 100_000:
            self._keys.clear()
        self._keys[key_id] = (stored, now + KEY_CACHE_SECONDS)
        return stored

    def forget_key(self, key_id: str) -> None:
        self._keys.pop(key_id, None)

    async def account_for_key(self, api_key: str, now: float) -> str:
        """The account of a presented key; raises Unauthorized (one reason)."""
        try:
            key_id = key_id_of(api_key)
            check_api_key(api_key, await self.stored_hash(key_id, now))
        except BadApiKey:
            self.services.metrics.evidence.labels("credits", "bad_api_key").inc()
            raise Unauthorized(
                "bad api key", reason="bad_api_key", public="The API key is not valid."
            ) from None
        return account_of_key(key_id)

    # -- debits ------------------------------------------------------------
    async def debit(self, ctx: Context, amount: int, account: str) -> tuple[str, int | None]:
        """Debit with a fresh ref; returns (ref, new balance or None). Fails closed."""
        ref = f"req:{uuid.uuid4().hex}"
        try:
            bal = await self.services.store.debit_ledger(account, amount, ref, ctx.now)
        except StoreUnavailable as exc:
            self.services.metrics.store_errors.labels("debit").inc()
            # The debit may still land (a timed-out command Redis runs late):
            # make the outcome certain, then undo it, so a 503 is never billed.
            task = asyncio.get_running_loop().create_task(self._compensate(account, amount, ref, ctx.now))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            raise StoreFailure(str(exc)) from None
        return ref, bal

    async def _compensate(self, account: str, amount: int, ref: str, at: float) -> None:
        """Settle a debit whose answer was lost: replay it (idempotent on
        ``ref``: a no-op if it landed), then refund it (``refund:<ref>``)."""
        store = self.services.store
        for attempt in range(6):
            try:
                if await store.debit_ledger(account, amount, ref, at) is not None:
                    await store.credit_ledger(
                        account, amount, "refund", f"refund:{ref}", self.services.clock()
                    )
                return
            except StoreUnavailable:
                await asyncio.sleep(0.25 * 2**attempt)
        log.error(
            "could not settle a lost debit of %s on %s (ref %s): store unavailable", amount, account, ref
        )

    def _bill_on_success(
        self,
        ctx: Context,
        account: str,
        amount: int,
        ref: str,
        rail: str,
        drop_on_failure: tuple[str, ...] = (),
    ) -> None:
        def hook(response: web.StreamResponse) -> None:
            if served(response.status):
                return
            if not response.prepared:
                for name in drop_on_failure:
                    response.headers.popall(name, None)
            task = asyncio.get_running_loop().create_task(self._refund(account, amount, ref, rail))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        ctx.after_response.append(hook)

    async def _refund(self, account: str, amount: int, ref: str, rail: str) -> None:
        for attempt in range(5):
            try:
                await self.services.store.credit_ledger(
                    account, amount, "refund", f"refund:{ref}", self.services.clock()
                )
                self.services.metrics.payments.labels(rail, "refunded").inc()
                await self.meter.refund(rail, account, amount)
                return
            except StoreUnavailable:
                await asyncio.sleep(0.2 * 2**attempt)
        log.error("refund of %s to %s (ref %s) failed: store unavailable", amount, account, ref)

    async def pay_with_key(self, ctx: Context, charge: Charge, api_key: str) -> Decision | None:
        account = await self.account_for_key(api_key, ctx.now)
        ref, bal = await self.debit(ctx, charge.price, account)
        if bal is None:
            self.services.metrics.payments.labels("credits", "insufficient_credits").inc()
            balance = await self._balance(account)
            ways = self.ways_out(ctx, charge.price, balance=balance)[:1]
            return with_ways(
                charge,
                tuple(ways),
                reason="insufficient_credits",
                detail="The account balance does not cover this request: top up.",
            )
        self._settled(ctx, charge, account, "credits")
        self._bill_on_success(ctx, account, charge.price, ref, "credits")
        await self.meter.record("credits", charge.route, account, charge.price)
        return None

    async def _balance(self, account: str) -> int | None:
        try:
            return await self.services.store.balance(account)
        except StoreUnavailable:
            return None

    def _settled(self, ctx: Context, charge: Charge, account: str, rail: str) -> None:
        self.services.metrics.payments.labels(rail, "ok").inc()
        ctx.charged = charge.price
        ctx.charge = None
        if not ctx.subject:
            ctx.subject = account

    async def pay_crawl(self, ctx: Context, charge: Charge) -> Decision | None:
        """Pay-per-crawl: bill a verified crawler's account."""
        price = usd(charge.price)
        try:
            if ctx.klass != "verified-agent" or not ctx.subject:
                raise CrawlerPriceError("StrongAuthRequired", f"class {ctx.klass}")
            _require_signed_price(ctx)
            accept_offer(ctx.request.headers, price)
            account = crawler_account(ctx.subject)
            ref, bal = await self.debit(ctx, charge.price, account)
            if bal is None:
                raise CrawlerPriceError("PaymentFailed", "balance short")
        except CrawlerPriceError as exc:
            self.services.metrics.payments.labels("crawler", exc.code).inc()
            code = exc.code
            ctx.after_response.append(
                lambda r: r.headers.__setitem__(CRAWLER_ERROR, code) if not r.prepared else None
            )
            if exc.status == 402:
                return with_ways(
                    charge,
                    tuple(self.ways_out(ctx, charge.price)),
                    reason=exc.reason,
                    detail=f"crawler-error: {code}",
                )
            err = BadRequest if exc.status == 400 else Forbidden
            raise err(exc.detail, reason=exc.reason, public=f"crawler-error: {code}") from None
        self._settled(ctx, charge, account, "crawler")
        ctx.response_headers.append((CRAWLER_CHARGED, format_price(price)))
        self._bill_on_success(ctx, account, charge.price, ref, "crawler", (CRAWLER_CHARGED,))
        await self.meter.record("crawler", charge.route, account, charge.price)
        return None


def _require_signed_price(ctx: Context) -> None:
    """Billing a crawler needs its consent in the signature: the price header it
    sent must be covered, and a nonce (spent once) must make the request unique —
    otherwise a captured signed request could be replayed with a price added."""
    sig = next(
        (
            a.extra.get("signature")
            for a in ctx.attestations
            if a.evidence == "webbotauth" and isinstance(a.extra, dict)
        ),
        None,
    )
    if sig is None:
        raise CrawlerPriceError("StrongAuthRequired", "no Web Bot Auth signature")
    headers = ctx.request.headers
    for name in (CRAWLER_EXACT_PRICE, CRAWLER_MAX_PRICE):
        if name in headers and not sig.covers(name):
            raise CrawlerPriceError("StrongAuthRequired", f"{name} not covered by the signature")
    if not sig.nonce:
        raise CrawlerPriceError("StrongAuthRequired", "paid crawls need a signature nonce")


def served(status: int) -> bool:
    """Was the request served (and so billed)? 2xx, or 101: a WebSocket upgrade went through."""
    return 200 <= status < 300 or status == 101
