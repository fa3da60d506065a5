"""The ``[x402]`` and ``[credits]`` tables, validated into
:class:`X402Settings` and :class:`CreditsSettings` by the config loader in
the same pass as every other table (the table reference is in
:mod:`gateway.payments.fees`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from popgate.gateway.ops.validation import Collector, read_secret
from popgate.gateway.payments.batch_settings import BatchSettings, parse_batch
from popgate.gateway.payments.upto_settings import UptoSettings, parse_upto
from popgate.verifiers.evm import parse_address
from popgate.verifiers.x402 import USDC, Asset, usd_to_atomic


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
    debt_limit_network: int = 5_000_000
    debt_limit_total: int = 50_000_000
    verify_new_payers: bool = True
    forward_payment_header: bool = False
    batch: BatchSettings | None = None  # [x402.batch]: batch-settlement offered too
    upto: UptoSettings | None = None  # [x402.upto]: upto (usage-priced) on some routes


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


def parse_x402(c: Collector, t: dict[str, Any], routes: frozenset[str] | None = None) -> X402Settings | None:
    """Validate ``[x402]``; every problem is recorded with its key path (``routes``:
    the policy file's routes, None without one)."""
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
            "debt_limit_network",
            "debt_limit_total",
            "verify_new_payers",
            "forward_payment_header",
            "batch",
            "upto",
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
    debt_net = _usd(c, "x402.debt_limit_network", t.get("debt_limit_network", "5.00"), positive=False)
    debt_total = _usd(c, "x402.debt_limit_total", t.get("debt_limit_total", "50.00"), positive=False)
    price = _usd(c, "x402.price", t.get("price", "0.01"))
    v1 = _flag(c, t, "accept_v1", False)
    verify_new = _flag(c, t, "verify_new_payers", True)
    forward = _flag(c, t, "forward_payment_header", False)
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
    batch = parse_batch(c, t["batch"]) if "batch" in t else None
    upto = parse_upto(c, t["upto"], routes) if "upto" in t else None
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
        int(debt_net or 0),
        int(debt_total or 0),
        verify_new,
        forward,
        batch,
        upto,
    )


def _flag(c: Collector, t: dict[str, Any], name: str, default: bool) -> bool:
    value = t.get(name, default)
    if not isinstance(value, bool):
        c.problem(f"x402.{name}", f"expected true or false, got {value!r}")
        return default
    return value


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
