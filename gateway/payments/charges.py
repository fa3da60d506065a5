"""Helpers the fee rails share: what the current request would be charged,
and a Charge with more ways out.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import Charge, WayOut
from popgate.policies.model import Match


def route_price(ctx: Context, match: Match | None) -> int | None:
    """The price the current request would be charged: a pending Charge's, or
    the matched policy rule's (a ``challenge`` whose ways include ``pay``)."""
    if ctx.charge is not None:
        return ctx.charge.price
    price = match.action.price if match is not None else 0
    return int(price) if price else None


def with_ways(charge: Charge, ways: tuple[WayOut, ...], **changes: Any) -> Charge:
    """The Charge with our ways out: a way of a kind the Charge already lists
    replaces it in place (the rail's way carries the refusal reason, the balance:
    the policy's plain offer of the same kind must not hide it); others are appended."""
    fresh = {w.kind: w for w in ways}
    kept = tuple(fresh.pop(w.kind, w) for w in charge.ways_out)
    return replace(charge, ways_out=kept + tuple(w for w in ways if w.kind in fresh), **changes)
