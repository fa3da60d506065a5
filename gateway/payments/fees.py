"""Fees: the ``payments`` extension wires x402, prepaid credits and
pay-per-crawl into the pipeline, and meters what each subject spent.

How a fee meets the policy: the Decide stage leaves a
:class:`~gateway.pipeline.decisions.Charge` in ``ctx.charge``. The payment
enforcer (Enforce stage) settles it from the first rail the request uses:

1. x402 (``PAYMENT-SIGNATURE``, or ``X-PAYMENT`` when ``accept_v1``):
   :class:`gateway.payments.x402.X402Rail`;
2. an API key (``Authorization: Bearer pgk_...``) with a prepaid balance;
3. a Web Bot Auth crawler (class ``verified-agent``) that sent
   ``crawler-exact-price`` / ``crawler-max-price``, billed to the credit
   account ``crawler:<subject>`` (:class:`gateway.payments.credits.CreditsRail`).

Settled → ``ctx.charged = price``, ``ctx.charge = None`` (allowed; the
origin sees ``PoP-Charged``). A bad payment → 402 (with the reason) or 400
(malformed header). No payment → the Charge is answered 402 with every way
out filled in: ``PAYMENT-REQUIRED``, ``crawler-price``, the credits top-up.

Config tables (absent → that rail is off)::

    [x402]
    networks = ["eip155:84532"]          # CAIP-2
    pay_to = "0x..."
    facilitator = "https://..."          # /verify, /settle
    settle = "before"                    # before | after
    debt_limit = "1.00"                  # USD unsettled per payer (settle = after)
    debt_limit_network = "5.00"          # ... per client network; debt_limit_total = "50.00": fleet-wide
    verify_new_payers = true             # settle = after: facilitator /verify for a payer not yet settled
    forward_payment_header = false       # PAYMENT-SIGNATURE / X-PAYMENT are stripped before the origin
    accept_v1 = false
    price = "0.01"                       # offered on plain challenges that allow pay
    max_timeout_seconds = 300
    settle_interval = 5.0                # background retry period, seconds
    retry_backoff = 2.0                  # first retry delay (doubles, capped at 300 s)
    verify_timeout = 5.0                 # facilitator /supported and /verify, seconds
    settle_timeout = 30.0                # facilitator /settle: then 503 settlement_pending, held
    rpc = { "eip155:84532" = "https://..." }   # eth_getCode: payers with code → /verify
    [x402.assets."eip155:84532"]         # optional; default: USDC
    address = "0x..." ; name = "USDC" ; version = "2" ; decimals = 6
    [x402.upto]                          # optional: upto on routes priced by usage
    facilitator_address = "0x..."        # (gateway/payments/upto_settings.py)
    [x402.upto.routes.<route>]
    usage_header = "X-Usage-Tokens" ; unit_price = "0.000002" ; max = "0.05"

    [credits]
    admin_token = { secret_file = "/run/secrets/admin" }   # or secret_env
    topup_amounts = ["0.10", "1.00"]     # USD offered by POST /.well-known/popgate/credits/topup
    crawlers = true                      # pay-per-crawl headers

The tables are validated by the config loader (:mod:`gateway.payments.settings`);
the settlement worker is a background task of the gateway (started with it).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from popgate.gateway.errors import BadRequest
from popgate.gateway.payments.charges import route_price, with_ways
from popgate.gateway.payments.credits import CreditsRail
from popgate.gateway.payments.credits_api import register_credits_api
from popgate.gateway.payments.evidence import PaymentScheme, payment_of
from popgate.gateway.payments.settings import CreditsSettings, X402Settings, parse_credits, parse_x402
from popgate.gateway.payments.x402 import X402Rail
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import Decision, WayOut
from popgate.gateway.registry import Registry, Services
from popgate.gateway.stores.base import StoreUnavailable, key

# re-exported: the settings and helpers used to live here
__all__ = [
    "CreditsSettings",
    "Meter",
    "PaymentEnforcer",
    "X402Settings",
    "parse_credits",
    "parse_x402",
    "payments",
    "route_price",
    "with_ways",
]

log = logging.getLogger("popgate.fees")
RAILS = ("x402", "credits", "crawler")
SPENT_WINDOW = 10 * 365 * 86400.0


class Meter:
    """Fees as metrics (bounded labels: rail, route) and per-subject totals
    in the store (read through the admin API)."""

    __slots__ = ("_fees", "services")

    def __init__(self, services: Services) -> None:
        self.services = services
        self._fees: dict[tuple[str, str], Any] = {}  # (rail, route) -> its fee counter

    def count(self, rail: str, route: str, amount: int) -> None:
        """The fee metric (its labelled counter looked up once per rail and route)."""
        counter = self._fees.get((rail, route))
        if counter is None:
            counter = self.services.metrics.fees.labels(rail, route or "default")
            if len(self._fees) < 1024:  # routes come from the policy: a small set
                self._fees[(rail, route)] = counter
        counter.inc(amount)

    async def record(self, rail: str, route: str, subject: str, amount: int, wait: bool = True) -> None:
        """Count a fee; ``wait=False``: the store's tally goes out with the next
        group commit (Redis) instead of costing the request a round trip."""
        self.count(rail, route, amount)
        k = key("spent", f"{subject}|{rail}")
        soon = getattr(self.services.store, "incr_soon", None) if not wait else None
        queued = soon(k, amount, SPENT_WINDOW) if soon is not None else None
        if queued is not None:
            queued.add_done_callback(lambda f: self._lost(f, subject))
            return
        try:
            await self.services.store.incr(k, amount, SPENT_WINDOW)
        except StoreUnavailable as exc:  # the fee itself is settled; only the tally is lost
            self.services.metrics.store_errors.labels("meter").inc()
            log.warning("could not record spend of %s: %s", subject, exc)

    def _lost(self, done: asyncio.Future[Any], subject: str) -> None:
        exc = None if done.cancelled() else done.exception()
        if exc is not None:
            self.services.metrics.store_errors.labels("meter").inc()
            log.warning("could not record spend of %s: %s", subject, exc)

    async def refund(self, rail: str, subject: str, amount: int) -> None:
        """Take a refunded fee off the subject's tally (metrics stay monotonic)."""
        try:
            await self.services.store.incr(key("spent", f"{subject}|{rail}"), -amount, SPENT_WINDOW)
        except StoreUnavailable:
            self.services.metrics.store_errors.labels("meter").inc()

    async def usage(self, subject: str) -> dict[str, int]:
        out = {}
        for rail in RAILS:
            raw = await self.services.store.get(key("spent", f"{subject}|{rail}"))
            out[rail] = int(raw) if raw else 0
        return out


class PaymentEnforcer:
    """Settles a pending Charge from the first rail the request uses."""

    __slots__ = ("credits", "x402")

    def __init__(self, x402: X402Rail | None, credits: CreditsRail | None) -> None:
        self.x402 = x402
        self.credits = credits

    async def __call__(self, ctx: Context) -> Decision | None:
        charge = ctx.charge
        if charge is None:
            return None
        payment = payment_of(ctx.evidence)
        if payment is not None:
            if payment.rail == "x402" and self.x402 is not None:
                if payment.x402 is None:
                    raise BadRequest(
                        f"payment header: {payment.malformed}",
                        reason="malformed_payment",
                        public="The payment header could not be decoded.",
                    )
                return await self.x402.pay(ctx, charge, payment.x402)
            if payment.rail == "credits" and self.credits is not None and payment.api_key is not None:
                ctx.consume("authorization")  # a popgate API key is not the origin's business
                return await self.credits.pay_with_key(ctx, charge, payment.api_key)
            if payment.rail == "crawler" and self.credits is not None:
                return await self.credits.pay_crawl(ctx, charge)
        ctx.charge = with_ways(charge, self.ways(ctx, charge.price))
        return None

    @staticmethod
    def carries_payment(ctx: Context) -> bool:
        """Does the request bring a payment one of our rails would take?

        The policy stage asks this on a ``challenge`` that accepts ``pay`` or
        ``credits``: a paying client is charged the route's price instead of
        being challenged again.
        """
        return payment_of(ctx.evidence) is not None

    def ways(self, ctx: Context, price: int, **extra: Any) -> tuple[WayOut, ...]:
        ways: list[WayOut] = []
        if self.x402 is not None:
            ways.append(self.x402.way_out(ctx, price, error=extra.get("error")))
        if self.credits is not None:
            ways.extend(self.credits.ways_out(ctx, price, balance=extra.get("balance")))
        return tuple(ways)


def channels_view(x402: X402Rail) -> Any:
    """Admin ``GET /x402/channels``: batch-settlement channels, unclaimed and claimed totals."""

    async def view(request: web.Request) -> web.Response:
        rail = await x402.batch()
        return web.json_response(await rail.claims.summary())

    return view


def payments(registry: Registry, services: Services) -> None:
    """Extension: the validated ``[x402]`` and/or ``[credits]`` turn the fee rails on."""
    features = services.config.features
    xs, cs = features.x402, features.credits
    if xs is None and cs is None:
        return
    meter = Meter(services)
    x402 = X402Rail(xs, services, meter) if xs is not None else None
    credits = CreditsRail(cs, services, meter) if cs is not None else None
    enforcer = PaymentEnforcer(x402, credits)
    registry.deferred.append(
        PaymentScheme(
            x402=xs is not None,
            accept_v1=xs is not None and xs.accept_v1,
            credits=cs is not None,
            crawlers=cs is not None and cs.crawlers,
        )
    )
    registry.enforcers.append(enforcer)
    registry.payment_probes.append(enforcer.carries_payment)
    if x402 is not None:
        registry.way_out_providers.append(x402.challenge_way_out)
        registry.background.append(x402.worker)
        if x402.claim_worker is not None:
            registry.background.append(x402.claim_worker)
            registry.admin_routes.append(("GET", "/x402/channels", channels_view(x402)))
        services.cleanups.append(x402.close)
    if credits is not None:
        registry.way_out_providers.append(credits.challenge_way_out)
        services.cleanups.append(credits.close)
    register_credits_api(registry, services, meter, x402, credits, enforcer)
