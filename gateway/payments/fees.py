"""Fees: the ``payments`` extension wires x402, prepaid credits and
pay-per-crawl into the pipeline, and meters what each subject spent.

How a fee meets the policy: the Decide stage leaves a
:class:`~gateway.pipeline.decisions.Charge` in ``ctx.decision``. The payment
enforcer (Enforce stage) settles it from the first rail the request uses:

1. x402 (``PAYMENT-SIGNATURE``, or ``X-PAYMENT`` when ``accept_v1``):
   :class:`gateway.payments.x402.X402Rail`;
2. an API key (``Authorization: Bearer pgk_...``) with a prepaid balance;
3. a Web Bot Auth crawler (class ``verified-agent``) that sent
   ``crawler-exact-price`` / ``crawler-max-price``, billed to the credit
   account ``crawler:<subject>`` (:class:`gateway.payments.credits.CreditsRail`).

Settled → ``ctx.charged = price``, ``ctx.decision = None`` (allowed; the
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

    [credits]
    admin_token = { secret_file = "/run/secrets/admin" }   # or secret_env
    topup_amounts = ["0.10", "1.00"]     # USD offered by POST /.well-known/popgate/credits/topup
    crawlers = true                      # pay-per-crawl headers
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from popgate.gateway.app import Gateway, Services
from popgate.gateway.errors import BadRequest
from popgate.gateway.ops.config import ConfigError, read_secret
from popgate.gateway.ops.validation import Collector
from popgate.gateway.payments.ledger import bearer_key
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import Charge, Decision, WayOut
from popgate.gateway.stores.base import StoreUnavailable, key
from popgate.verifiers.errors import Malformed
from popgate.verifiers.evm import parse_address
from popgate.verifiers.paypercrawl import CRAWLER_EXACT_PRICE, CRAWLER_MAX_PRICE
from popgate.verifiers.x402 import USDC, Asset, usd_to_atomic

if TYPE_CHECKING:  # the rails import this module
    from popgate.gateway.payments.credits import CreditsRail
    from popgate.gateway.payments.x402 import X402Rail

log = logging.getLogger("popgate.fees")
RAILS = ("x402", "credits", "crawler")
SPENT_WINDOW = 10 * 365 * 86400.0


@dataclass(frozen=True, slots=True)
class X402Settings:
    networks: tuple[str, ...]
    pay_to: str
    facilitator: str
    assets: dict[str, Asset] = field(default_factory=dict)
    settle: str = "before"
    debt_limit: int = 1_000_000
    accept_v1: bool = False
    price: int = 10_000
    max_timeout_seconds: int = 300
    settle_interval: float = 5.0
    rpc: dict[str, str] = field(default_factory=dict)
    retry_backoff: float = 2.0
    verify_timeout: float = 5.0
    settle_timeout: float = 30.0


@dataclass(frozen=True, slots=True)
class CreditsSettings:
    admin_token: bytes | None
    topup_amounts: tuple[int, ...] = (100_000, 1_000_000)
    crawlers: bool = True


def _usd(c: Collector, path: str, value: Any, *, positive: bool = True) -> int | None:
    try:
        atomic = usd_to_atomic(value if isinstance(value, str) else str(value))
    except (ValueError, TypeError) as exc:
        c.problem(path, f'expected a decimal USD amount such as "0.01": {exc}')
        return None
    if isinstance(value, float):
        c.problem(path, 'give USD amounts as strings ("0.01"), not floats')
        return None
    if positive and atomic <= 0:
        c.problem(path, "must be greater than 0")
        return None
    return atomic


def parse_x402(c: Collector, t: dict[str, Any]) -> X402Settings | None:
    """Validate ``[x402]``; every problem is recorded with its key path."""
    c.unknown_keys(
        "x402",
        t,
        {
            "networks",
            "pay_to",
            "facilitator",
            "assets",
            "settle",
            "debt_limit",
            "accept_v1",
            "price",
            "max_timeout_seconds",
            "settle_interval",
            "rpc",
            "retry_backoff",
            "verify_timeout",
            "settle_timeout",
        },
    )
    nets = t.get("networks", ["eip155:84532"])
    networks: list[str] = []
    if not isinstance(nets, list) or not nets:
        c.problem("x402.networks", 'expected a non-empty list of CAIP-2 networks ("eip155:8453")')
        nets = []
    assets: dict[str, Asset] = {}
    raw_assets = c.table("assets", t)
    for i, n in enumerate(nets):
        ns, _, ref = str(n).partition(":")
        if ns != "eip155" or not ref.isdigit():
            c.problem(f"x402.networks[{i}]", f"not an EVM CAIP-2 network: {n!r}")
            continue
        networks.append(str(n))
        if n not in USDC and n not in raw_assets:
            c.problem(f'x402.assets."{n}"', "no default USDC for this network: configure its asset")
    for n, a in raw_assets.items():
        p = f'x402.assets."{n}"'
        if n not in nets:
            c.problem(p, "asset for a network not listed in x402.networks")
        if not isinstance(a, dict):
            c.problem(p, "expected a table with address, name, version[, decimals]")
            continue
        c.unknown_keys(p, a, {"address", "name", "version", "decimals"})
        try:
            parse_address(str(a.get("address")))
        except ValueError:
            c.problem(f"{p}.address", f"not an EVM address: {a.get('address')!r}")
            continue
        if not isinstance(a.get("name"), str) or not isinstance(a.get("version"), str):
            c.problem(p, "name and version (the token's EIP-712 domain) are required strings")
            continue
        dec = c.number(f"{p}.decimals", a.get("decimals", 6), lo=0, hi=36, integer=True)
        assets[n] = Asset(str(a["address"]), a["name"], a["version"], int(dec or 6))
    pay_to = t.get("pay_to")
    try:
        parse_address(str(pay_to))
    except ValueError:
        c.problem("x402.pay_to", f"required: the EVM address that receives payments, got {pay_to!r}")
    fac = t.get("facilitator")
    if not isinstance(fac, str) or not fac.startswith(("http://", "https://")):
        c.problem("x402.facilitator", f"required: the facilitator's http(s) base URL, got {fac!r}")
    settle = t.get("settle", "before")
    if settle not in ("before", "after"):
        c.problem("x402.settle", f'expected "before" or "after", got {settle!r}')
    debt = _usd(c, "x402.debt_limit", t.get("debt_limit", "1.00"), positive=False)
    price = _usd(c, "x402.price", t.get("price", "0.01"))
    v1 = t.get("accept_v1", False)
    if not isinstance(v1, bool):
        c.problem("x402.accept_v1", f"expected true or false, got {v1!r}")
    mts = c.number(
        "x402.max_timeout_seconds", t.get("max_timeout_seconds", 300), lo=10, hi=86400, integer=True
    )
    interval = c.number("x402.settle_interval", t.get("settle_interval", 5.0), lo=0.05, hi=3600)
    backoff = c.number("x402.retry_backoff", t.get("retry_backoff", 2.0), lo=0.01, hi=3600)
    verify_timeout = c.number("x402.verify_timeout", t.get("verify_timeout", 5.0), lo=0.1, hi=120)
    settle_timeout = c.number("x402.settle_timeout", t.get("settle_timeout", 30.0), lo=0.1, hi=600)
    rpc = c.table("rpc", t)
    for n, url in rpc.items():
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            c.problem(f'x402.rpc."{n}"', f"expected a JSON-RPC http(s) URL, got {url!r}")
        if n not in nets:
            c.problem(f'x402.rpc."{n}"', "RPC for a network not listed in x402.networks")
    if any(p.startswith("x402") for p in c.problems):
        return None
    return X402Settings(
        tuple(networks),
        str(pay_to),
        str(fac),
        assets,
        str(settle),
        int(debt or 0),
        bool(v1),
        int(price or 0),
        int(mts or 300),
        float(interval or 5.0),
        {str(k): str(v) for k, v in rpc.items()},
        float(backoff or 2.0),
        float(verify_timeout or 5.0),
        float(settle_timeout or 30.0),
    )


def parse_credits(c: Collector, t: dict[str, Any], env: Any) -> CreditsSettings | None:
    """Validate ``[credits]``."""
    c.unknown_keys("credits", t, {"admin_token", "topup_amounts", "crawlers"})
    token = None
    if "admin_token" in t:
        tt = t["admin_token"]
        if not isinstance(tt, dict):
            c.problem("credits.admin_token", "expected { secret_file = ... } or { secret_env = ... }")
        else:
            c.unknown_keys("credits.admin_token", tt, {"secret_file", "secret_env", "secret"})
            token = read_secret(c, "credits.admin_token", tt, env)
    amounts = t.get("topup_amounts", ["0.10", "1.00"])
    out: list[int] = []
    if not isinstance(amounts, list) or not amounts:
        c.problem("credits.topup_amounts", "expected a non-empty list of USD amounts")
    else:
        for i, a in enumerate(amounts):
            v = _usd(c, f"credits.topup_amounts[{i}]", a)
            if v is not None:
                out.append(v)
    crawlers = t.get("crawlers", True)
    if not isinstance(crawlers, bool):
        c.problem("credits.crawlers", f"expected true or false, got {crawlers!r}")
    if any(p.startswith("credits") for p in c.problems):
        return None
    return CreditsSettings(token, tuple(out), bool(crawlers))


class Meter:
    """Fees as metrics (bounded labels: rail, route) and per-subject totals
    in the store (read through the admin API)."""

    __slots__ = ("services",)

    def __init__(self, services: Services) -> None:
        self.services = services

    async def record(self, rail: str, route: str, subject: str, amount: int) -> None:
        self.services.metrics.fees.labels(rail, route or "default").inc(amount)
        try:
            await self.services.store.incr(key("spent", f"{subject}|{rail}"), amount, SPENT_WINDOW)
        except StoreUnavailable as exc:  # the fee itself is settled; only the tally is lost
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
        charge = ctx.decision
        if not isinstance(charge, Charge):
            return None
        headers = ctx.request.headers
        if self.x402 is not None:
            self.x402.ensure_worker()
            try:
                payment = self.x402.extract(headers)
            except Malformed as exc:
                raise BadRequest(
                    f"payment header: {exc.detail}",
                    reason="malformed_payment",
                    public="The payment header could not be decoded.",
                ) from None
            if payment is not None:
                return await self.x402.pay(ctx, charge, payment)
        if self.credits is not None:
            api_key = bearer_key(headers.get("Authorization"))
            if api_key is not None:
                ctx.consume("authorization")  # a popgate API key is not the origin's business
                return await self.credits.pay_with_key(ctx, charge, api_key)
            if self.credits.settings.crawlers and (
                CRAWLER_EXACT_PRICE in headers or CRAWLER_MAX_PRICE in headers
            ):
                return await self.credits.pay_crawl(ctx, charge)
        ctx.decision = with_ways(charge, self.ways(ctx, charge.price))
        return None

    def carries_payment(self, headers: Any) -> bool:
        """Does the request bring a payment one of our rails would take?

        The policy stage asks this on a ``challenge`` that accepts ``pay`` or
        ``credits``: a paying client is charged the route's price instead of
        being challenged again.
        """
        if self.x402 is not None and (
            "PAYMENT-SIGNATURE" in headers or (self.x402.settings.accept_v1 and "X-PAYMENT" in headers)
        ):
            return True
        if self.credits is not None:
            if bearer_key(headers.get("Authorization")) is not None:
                return True
            if self.credits.settings.crawlers and (
                CRAWLER_EXACT_PRICE in headers or CRAWLER_MAX_PRICE in headers
            ):
                return True
        return False

    def ways(self, ctx: Context, price: int, **extra: Any) -> tuple[WayOut, ...]:
        ways: list[WayOut] = []
        if self.x402 is not None:
            ways.append(self.x402.way_out(ctx, price, error=extra.get("error")))
        if self.credits is not None:
            ways.extend(self.credits.ways_out(ctx, price, balance=extra.get("balance")))
        return tuple(ways)


def route_price(ctx: Context) -> int | None:
    """The price the current request would be charged: a pending Charge's, or
    the matched policy rule's (a ``challenge`` whose ways include ``pay``)."""
    d = ctx.decision
    if isinstance(d, Charge):
        return d.price
    match = ctx.evidence.get("policy") if ctx.evidence else None
    action = getattr(match, "action", None)
    price = getattr(action, "price", 0)
    return int(price) if price else None


def with_ways(charge: Charge, ways: tuple[WayOut, ...], **changes: Any) -> Charge:
    """The Charge with our ways out added (kinds it already lists are kept)."""
    have = {w.kind for w in charge.ways_out}
    return replace(charge, ways_out=charge.ways_out + tuple(w for w in ways if w.kind not in have), **changes)


def payments(gateway: Gateway, services: Services) -> None:
    """Extension: ``[x402]`` and/or ``[credits]`` turn the fee rails on."""
    raw = services.config.raw
    if "x402" not in raw and "credits" not in raw:
        return
    import os

    from popgate.gateway.payments.credits import CreditsRail
    from popgate.gateway.payments.credits_api import register_credits_api
    from popgate.gateway.payments.x402 import X402Rail

    problems: list[str] = []
    c = Collector(raw, problems)
    xs = parse_x402(c, c.table("x402")) if "x402" in raw else None
    cs = parse_credits(c, c.table("credits"), os.environ) if "credits" in raw else None
    if problems:
        raise ConfigError(problems)
    meter = Meter(services)
    x402 = X402Rail(xs, services, meter) if xs is not None else None
    credits = CreditsRail(cs, services, meter) if cs is not None else None
    enforcer = PaymentEnforcer(x402, credits)
    gateway.enforcers.append(enforcer)
    stage = getattr(gateway, "policy_stage", None)
    if stage is not None:
        stage.payment_present = enforcer.carries_payment
    if x402 is not None:
        gateway.way_out_providers.append(x402.challenge_way_out)
        services.cleanups.append(x402.close)
        x402.ensure_worker()  # starts now when a loop runs, else on the first request
    if credits is not None:
        gateway.way_out_providers.append(credits.challenge_way_out)
        services.cleanups.append(credits.close)
    register_credits_api(gateway, services, meter, x402, credits, enforcer)
