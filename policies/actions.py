"""Parsing of action values (``"allow"`` or a table) into :class:`Action`.

Forms accepted wherever an action goes::

    "allow" | "deny" | "challenge"            # challenge = ways ["prove", "puzzle"]
    { kind = "challenge", ways = ["prove", "puzzle", "pay"], price = "0.001", min_bits = 16 }
    { kind = "charge", price = "0.002" }      # decimal USD -> atomic units (6 decimals)
    { kind = "throttle", rate = "60/min", burst = 10, per = "network" }
    { kind = "deny", status = 403 }
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from popgate.policies.model import ATOMIC_PER_USD, KINDS, WAYS, Action, Rate

MAX_PRICE_USD = Decimal(1000)
MAX_BITS = 40
_RATE_RE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*\Z")
_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
}
_KEYS = {
    "challenge": {"ways", "price", "min_bits"},
    "charge": {"price"},
    "throttle": {"rate", "burst", "per"},
    "deny": {"status"},
    "allow": set(),
}


class Problems:
    """Collects ``"key.path: message"`` strings; validation never stops early."""

    __slots__ = ("items",)

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, where: str, message: str) -> None:
        self.items.append(f"{where}: {message}" if where else message)

    def unknown_keys(self, where: str, table: dict[str, Any], known: set[str]) -> None:
        for k in table:
            if k not in known:
                self.add(
                    f"{where}.{k}" if where else k,
                    f"unknown key (expected one of: {', '.join(sorted(known))})",
                )


def parse_price(p: Problems, where: str, value: Any) -> int | None:
    """Decimal USD (string preferred: "0.001"; numbers accepted) to atomic units."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        p.add(where, f'expected a decimal USD amount like "0.001", got {value!r}')
        return None
    try:
        d = Decimal(value if isinstance(value, str) else repr(value))
    except InvalidOperation:
        p.add(where, f"not a decimal amount: {value!r}")
        return None
    atomic = d * ATOMIC_PER_USD
    if not d.is_finite() or d <= 0 or d > MAX_PRICE_USD:
        p.add(where, f"price must be > 0 and <= {MAX_PRICE_USD} USD, got {value!r}")
        return None
    if atomic != atomic.to_integral_value():
        p.add(where, f"at most 6 decimals (USDC atomic units), got {value!r}")
        return None
    return int(atomic)


def parse_rate(p: Problems, where: str, value: Any) -> tuple[int, float] | None:
    """``"60/min"``, ``"10/s"``, ``"100/10s"`` to (count, period seconds)."""
    m = _RATE_RE.match(value) if isinstance(value, str) else None
    if m is None or int(m.group(1)) < 1 or m.group(2) == "0":
        p.add(where, f'expected a rate like "60/min" or "100/10s", got {value!r}')
        return None
    return int(m.group(1)), float(int(m.group(2) or 1) * _UNITS[m.group(3)])


def _int(p: Problems, where: str, value: Any, lo: int, hi: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        p.add(where, f"expected an integer {lo}..{hi}, got {value!r}")
        return None
    return value


def parse_action(p: Problems, where: str, value: Any) -> Action | None:
    """Parse one action value; record problems and return None when invalid."""
    if isinstance(value, str):
        if value == "challenge":
            return Action("challenge", ways=("prove", "puzzle"))
        if value == "deny":
            return Action("deny", status=403)
        if value == "allow":
            return Action("allow")
        p.add(where, f"expected allow, deny, challenge or a table, got {value!r}")
        return None
    if not isinstance(value, dict):
        p.add(where, f"expected a string or a table, got {value!r}")
        return None
    kind = value.get("kind")
    if kind not in KINDS:
        p.add(f"{where}.kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
        return None
    n0 = len(p.items)
    p.unknown_keys(where, value, {"kind"} | _KEYS[kind])
    price = parse_price(p, f"{where}.price", value["price"]) if "price" in value else None
    if kind == "allow":
        action = Action("allow")
    elif kind == "deny":
        action = Action("deny", status=_int(p, f"{where}.status", value.get("status", 403), 400, 499) or 0)
    elif kind == "charge":
        if "price" not in value:
            p.add(f"{where}.price", "required for charge")
        action = Action("charge", ways=("pay", "credits"), price=price or 0)
    elif kind == "throttle":
        action = _throttle(p, where, value)
    else:
        action = _challenge(p, where, value, price)
    return action if len(p.items) == n0 else None


def _challenge(p: Problems, where: str, value: dict[str, Any], price: int | None) -> Action:
    ways = value.get("ways", ["prove", "puzzle"])
    # ways = [] is accepted on purpose: a 402 with no way out (start-up warns about it loudly)
    if not isinstance(ways, list) or any(w not in WAYS for w in ways) or len(set(ways)) != len(ways):
        p.add(f"{where}.ways", f"expected a list of distinct {', '.join(WAYS)}, got {ways!r}")
        ways = []
    if ("pay" in ways) != ("price" in value):
        p.add(f"{where}.price", "give a price exactly when ways include pay")
    bits = _int(p, f"{where}.min_bits", value.get("min_bits", 0), 0, MAX_BITS)
    return Action("challenge", ways=tuple(ways), price=price or 0, min_bits=bits or 0)


def _throttle(p: Problems, where: str, value: dict[str, Any]) -> Action:
    rate = parse_rate(p, f"{where}.rate", value.get("rate"))
    burst = _int(p, f"{where}.burst", value.get("burst", 0), 0, 1_000_000)
    per = value.get("per", "subject")
    if per not in ("subject", "network"):
        p.add(f"{where}.per", f"expected subject or network, got {per!r}")
    if rate is None or burst is None or per not in ("subject", "network"):
        return Action("throttle")
    return Action("throttle", rate=Rate(rate[0], rate[1], burst, per))
