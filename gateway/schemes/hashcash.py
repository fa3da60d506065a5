"""Self-minted hashcash v1 stamps on requests (``X-Hashcash``).

The stamp's syntax, work and date window are checked in Verify (one SHA-1);
the policy stage compares its resource (``<host>/<route>``, as the 402 body
says) and bits with the route, and spends it once only when it is what lets
the request through (see :class:`gateway.schemes.puzzle.WorkProof`).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from popgate.gateway.pipeline.context import Attestation, Context
from popgate.gateway.pipeline.decisions import WayOut
from popgate.gateway.schemes.puzzle import WorkProof
from popgate.verifiers import hashcash


def resource_for(ctx: Context, route: str) -> str:
    """The resource a stamp must name for ``route`` on this request's host."""
    return f"{ctx.target.host}/{route}"  # normalized: no port, no trailing dot, A-labels


class HashcashScheme:
    name = "hashcash"

    def __init__(self, max_age: float, skew: float = hashcash.DEFAULT_SKEW) -> None:
        self.max_age = max_age
        self.skew = skew

    def extract(self, request: web.BaseRequest) -> str | None:
        return request.headers.get("X-Hashcash")

    async def verify(self, ctx: Context, evidence: Any) -> Attestation:
        text = str(evidence).strip()
        stamp = hashcash.parse(text)
        att = hashcash.check(
            text, resource=stamp.resource, now=ctx.now, min_bits=0, max_age=self.max_age, skew=self.skew
        )
        proof = WorkProof("hashcash", att.resource, stamp.bits, att.spend)
        return Attestation("unknown", "", "hashcash", extra=proof)


def offer(ctx: Context, route: str, bits: int, max_age: float) -> WayOut:
    """The ``hashcash`` way out of a 402."""
    return WayOut("hashcash", hashcash.way_out(resource_for(ctx, route), bits, max_age))
