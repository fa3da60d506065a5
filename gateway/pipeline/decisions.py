"""What the pipeline decides about a request: plain, immutable values.

A stage returns one of these to stop the pipeline (or None to continue);
:mod:`gateway.pipeline.responses` turns it into HTTP. ``Allow`` is the only decision
that lets a request reach the upstream.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Allow:
    """Forward the request to the upstream."""

    kind = "allow"
    reason: str = "allowed"


@dataclass(frozen=True, slots=True)
class WayOut:
    """One accepted way past a challenge: ``prove``, ``puzzle``, ``pay``, ``credits``."""

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Rendered:
    """A 402 already in bytes, reused within a window (``gateway/pipeline/challenge_cache.py``)."""

    headers: tuple[tuple[str, str], ...]  # Content-Type included
    body: bytes


@dataclass(frozen=True, slots=True)
class Challenge:
    """Answer 402 listing every accepted way out (or with ``rendered``, those bytes)."""

    kind = "challenge"
    reason: str = "evidence_required"
    ways_out: tuple[WayOut, ...] = ()
    detail: str = "This resource needs proof that you are a person, some work, or a payment."
    rendered: Rendered | None = None


@dataclass(frozen=True, slots=True)
class Charge:
    """Let the request through once ``price`` (atomic units, 6 decimals) has
    been paid; unpaid, it is answered 402 listing ``ways_out`` (pay, credits)."""

    kind = "charge"
    price: int
    reason: str = "payment_required"
    ways_out: tuple[WayOut, ...] = ()
    detail: str = "This resource costs a fee per request."
    route: str = ""


@dataclass(frozen=True, slots=True)
class Throttle:
    """Answer 429 with Retry-After."""

    kind = "throttle"
    retry_after: float
    reason: str = "rate_limited"


@dataclass(frozen=True, slots=True)
class Deny:
    """Answer 403."""

    kind = "deny"
    reason: str = "denied"
    detail: str = "This client is not allowed here."


Decision = Allow | Challenge | Charge | Throttle | Deny
