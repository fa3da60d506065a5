"""Request-side adapters of the evidence schemes.

Each scheme pulls its evidence out of a request (``extract``: pure, cheap,
no I/O) and checks it (``verify``: may use the store, raises
``VerificationError``), producing an :class:`~gateway.pipeline.context.Attestation`.
Evidence settled against a decision instead (payments) is an :class:`Extractor` only.
The cryptography itself lives in :mod:`verifiers`.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from popgate.gateway.pipeline.context import Attestation, Context


class Extractor(Protocol):
    """Pulls one kind of evidence out of a request (pure, cheap, no I/O)."""

    name: str

    def extract(self, request: web.BaseRequest) -> Any | None:
        """Return the raw evidence, or None when the request carries none."""
        ...


class EvidenceScheme(Extractor, Protocol):
    """One kind of evidence a client can present with a request, checked in Verify."""

    async def verify(self, ctx: Context, evidence: Any) -> Attestation:
        """Check the evidence; raise VerificationError when it does not hold."""
        ...
