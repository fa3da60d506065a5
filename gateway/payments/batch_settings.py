"""``[x402.batch]``: offer x402 ``batch-settlement`` next to ``exact``.

Keys: ``receiver_authorizer`` (required: the address that signs claims,
non-zero), ``withdraw_delay`` (seconds, 900..2592000, default 900),
``min_deposit`` (USD, default ten times the price; announced as
``extra.minDeposit``), ``claim_margin`` (seconds a claim needs before a
payer's timed withdrawal completes, default 120), ``claim_threshold`` (USD
unclaimed on one channel that triggers a claim, default "1.00"),
``claim_max_age`` (seconds, default 3600) and ``claim_interval`` (seconds
between claim rounds, default 60), ``receiver_authorizer_key`` (``{ secret_file
= ... }`` or ``{ secret_env = ... }``: the receiver authorizer's private key as
hex, whose address must be ``receiver_authorizer``; claims are then signed for
``claimWithSignature``. Without it they go unsigned, for a facilitator that
holds the key itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from popgate.gateway.ops.validation import Collector, read_secret
from popgate.gateway.payments.claim_signer import ClaimSigner
from popgate.verifiers.evm import parse_address
from popgate.verifiers.x402 import usd_to_atomic
from popgate.verifiers.x402_channel import MAX_WITHDRAW_DELAY, MIN_WITHDRAW_DELAY


@dataclass(frozen=True, slots=True)
class BatchSettings:
    receiver_authorizer: str
    withdraw_delay: int = 900
    min_deposit: int | None = None  # atomic units; None: 10x the price
    claim_margin: int = 120
    claim_threshold: int = 1_000_000  # atomic units unclaimed on a channel
    claim_max_age: float = 3600.0
    claim_interval: float = 60.0
    claim_signer: ClaimSigner | None = field(default=None, repr=False, compare=False)


def parse_batch(c: Collector, t: Any, env: Any = None) -> BatchSettings | None:
    """Validate ``[x402.batch]``; problems carry their key path."""
    if not isinstance(t, dict):
        c.problem("x402.batch", "expected a table")
        return None
    c.unknown_keys(
        "x402.batch",
        t,
        {
            "receiver_authorizer",
            "withdraw_delay",
            "min_deposit",
            "claim_margin",
            "claim_threshold",
            "claim_max_age",
            "claim_interval",
            "receiver_authorizer_key",
        },
    )
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
    age = c.number("x402.batch.claim_max_age", t.get("claim_max_age", 3600), lo=1, hi=30 * 86400)
    every = c.number("x402.batch.claim_interval", t.get("claim_interval", 60), lo=0.05, hi=86400)
    floor = _usd(c, "x402.batch.min_deposit", t.get("min_deposit"))
    threshold = _usd(c, "x402.batch.claim_threshold", t.get("claim_threshold", "1.00"))
    signer = _signer(c, t.get("receiver_authorizer_key"), str(ra), env) if ok else None
    if not ok or None in (delay, margin, age, every, threshold) or -1 in (floor, threshold):
        return None
    if "receiver_authorizer_key" in t and signer is None:
        return None
    return BatchSettings(
        str(ra),
        int(delay or 0),
        floor,
        int(margin or 0),
        int(threshold or 0),
        float(age or 0),
        float(every or 0),
        signer,
    )


def _signer(c: Collector, t: Any, address: str, env: Any) -> ClaimSigner | None:
    """The receiver authorizer's key; problems name the key path, never the key."""
    if t is None:
        return None
    path = "x402.batch.receiver_authorizer_key"
    if not isinstance(t, dict):
        c.problem(path, "expected { secret_file = ... } or { secret_env = ... }")
        return None
    c.unknown_keys(path, t, {"secret_file", "secret_env", "secret"})
    raw = read_secret(c, path, t, os.environ if env is None else env)
    if raw is None:
        return None
    try:
        signer = ClaimSigner(raw)
    except ValueError as exc:
        c.problem(path, str(exc))
        return None
    if signer.address.lower() != address.lower():
        c.problem(path, f"the key's address {signer.address} is not receiver_authorizer {address}")
        return None
    return signer


def _usd(c: Collector, path: str, value: Any) -> int | None:
    """A positive USD amount in atomic units; None when absent, -1 after a problem."""
    if value is None:
        return None
    try:
        atomic = usd_to_atomic(str(value))
    except ValueError as exc:
        c.problem(path, f'expected a USD amount such as "1.00": {exc}')
        return -1
    if isinstance(value, float) or atomic <= 0:
        c.problem(path, 'expected a positive USD amount given as a string, such as "1.00"')
        return -1
    return atomic
