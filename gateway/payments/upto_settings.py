"""``[x402.upto]``: offer x402 ``upto`` (Permit2, priced by usage) on some routes.

    [x402.upto]
    facilitator_address = "0x..."      # required: the facilitator's upto signer (its /supported
                                       # upto kind's extra.facilitatorAddress), bound in the witness
    [x402.upto.routes.llm]             # a policy route (its rule charges or challenges with pay)
    usage_header = "X-Usage-Tokens"    # the origin's response header carrying the usage (an integer)
    unit_price = "0.000002"            # USD per unit of usage (whole atomic units: >= 0.000001)
    max = "0.05"                       # USD a client authorizes per request (what is settled at most)

On such a route the 402 offers ``upto`` (amount = ``max``) beside ``exact``
(the rule's fixed price), ``batch-settlement`` and credits. Needs popgate
inline: ``mode = "auth"`` is refused at start-up (:mod:`gateway.ops.config`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from popgate.gateway.ops.validation import Collector
from popgate.verifiers.evm import parse_address
from popgate.verifiers.x402 import usd_to_atomic

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
# Response headers that are not the origin's to give to the billing: framing, popgate's own.
_RESERVED = frozenset({"content-length", "transfer-encoding", "connection", "payment-response", "set-cookie"})


@dataclass(frozen=True, slots=True)
class UptoRoute:
    usage_header: str
    unit_price: int  # atomic units per unit of usage
    max_amount: int  # atomic units: the offer's amount, the most a request may cost


@dataclass(frozen=True, slots=True)
class UptoSettings:
    facilitator_address: str
    routes: dict[str, UptoRoute] = field(default_factory=dict)


def parse_upto(c: Collector, t: Any, routes: frozenset[str] | None) -> UptoSettings | None:
    """Validate ``[x402.upto]``; ``routes``: the policy file's routes (None: no file)."""
    if not isinstance(t, dict):
        c.problem("x402.upto", "expected a table")
        return None
    n0 = len(c.problems)
    c.unknown_keys("x402.upto", t, {"facilitator_address", "routes"})
    fa = t.get("facilitator_address")
    try:
        if parse_address(str(fa)) == b"\x00" * 20:
            raise ValueError("zero address")
    except ValueError:
        c.problem("x402.upto.facilitator_address", f"required: a non-zero EVM address, got {fa!r}")
    raw = t.get("routes")
    if not isinstance(raw, dict) or not raw:
        c.problem("x402.upto.routes", "expected at least one [x402.upto.routes.<route>] table")
        raw = {}
    out: dict[str, UptoRoute] = {}
    for name, r in raw.items():
        got = _route(c, f"x402.upto.routes.{name}", r)
        if routes is not None and name not in routes:
            known = ", ".join(sorted(routes)) or "none"
            c.problem(f"x402.upto.routes.{name}", f"no policy route {name!r} (routes: {known})")
        if got is not None:
            out[str(name)] = got
    if len(c.problems) != n0:
        return None
    return UptoSettings(str(fa), out)


def _route(c: Collector, p: str, r: Any) -> UptoRoute | None:
    if not isinstance(r, dict):
        c.problem(p, "expected a table with usage_header, unit_price, max")
        return None
    c.unknown_keys(p, r, {"usage_header", "unit_price", "max"})
    header = r.get("usage_header")
    ok = True
    if not isinstance(header, str) or not _TOKEN.fullmatch(header):
        c.problem(f"{p}.usage_header", f"expected an HTTP header name, got {header!r}")
        ok = False
    elif header.lower() in _RESERVED or header.lower().startswith("pop-"):
        c.problem(f"{p}.usage_header", f"{header!r} is not a header the origin may bill with")
        ok = False
    unit = _usd(c, f"{p}.unit_price", r.get("unit_price"))
    top = _usd(c, f"{p}.max", r.get("max"))
    if unit is None or top is None or not ok:
        return None
    if top < unit:
        c.problem(f"{p}.max", "must be at least unit_price (else no usage could be billed)")
        return None
    return UptoRoute(str(header), unit, top)


def _usd(c: Collector, path: str, value: Any) -> int | None:
    if not isinstance(value, str):
        c.problem(path, f'required: a USD amount given as a string, such as "0.01", got {value!r}')
        return None
    try:
        atomic = usd_to_atomic(value)
    except ValueError as exc:
        c.problem(path, f"expected a USD amount in whole atomic units (6 decimals): {exc}")
        return None
    if atomic <= 0:
        c.problem(path, "must be greater than 0")
        return None
    return atomic
