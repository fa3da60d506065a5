"""``[x402.batch]``: offer x402 ``batch-settlement`` next to ``exact``.

Keys: ``receiver_authorizer`` (required: the address that signs claims,
non-zero), ``withdraw_delay`` (seconds, 900..2592000, default 900),
``min_deposit`` (USD, default ten times the price; announced as
``extra.minDeposit``), ``claim_margin`` (seconds a claim needs before a
payer's timed withdrawal completes, default 120).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from popgate.gateway.ops.validation import Collector
from popgate.verifiers.evm import parse_address
from popgate.verifiers.x402 import usd_to_atomic
from popgate.verifiers.x402_channel import MAX_WITHDRAW_DELAY, MIN_WITHDRAW_DELAY


@dataclass(frozen=True, slots=True)
class BatchSettings:
    receiver_authorizer: str
    withdraw_delay: int = 900
    min_deposit: int | None = None  # atomic units; None: 10x the price
    claim_margin: int = 120


def parse_batch(c: Collector, t: Any) -> BatchSettings | None:
    """Validate ``[x402.batch]``; problems carry their key path."""
    if not isinstance(t, dict):
        c.problem("x402.batch", "expected a table")
        return None
    c.unknown_keys("x402.batch", t, {"receiver_authorizer", "withdraw_delay", "min_deposit", "claim_margin"})
    ra = t.get("receiver_authorizer")
    ok = True
    try:
        if parse_address(str(ra)) == b"\x00" * 20:
            raise ValueError("zero address")
    except ValueError:
        c.problem("x402.batch.receiver_authorizer", f"required: a non-zero EVM address, got {ra!r}")
        ok = False
    delay = c.number(
        "x402.batch.withdraw_delay",
        t.get("withdraw_delay", 900),
        lo=MIN_WITHDRAW_DELAY,
        hi=MAX_WITHDRAW_DELAY,
        integer=True,
    )
    margin = c.number("x402.batch.claim_margin", t.get("claim_margin", 120), lo=0, hi=86400, integer=True)
    floor: int | None = None
    if "min_deposit" in t:
        try:
            floor = usd_to_atomic(str(t["min_deposit"]))
        except ValueError as exc:
            c.problem("x402.batch.min_deposit", f'expected a USD amount such as "1.00": {exc}')
            ok = False
    if not ok or delay is None or margin is None:
        return None
    return BatchSettings(str(ra), int(delay), floor, int(margin))
