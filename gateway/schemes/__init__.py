"""Request-side adapters of the evidence schemes.

Each scheme pulls its evidence out of a request (``extract``: pure, cheap,
no I/O) and checks it (``verify``: may use the store, raises
``VerificationError``), producing an :class:`~gateway.pipeline.context.Attestation`.
The cryptography itself lives in :mod:`verifiers`.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiohttp import web

from popgate.gateway.pipeline.context import Attestation, Context


class EvidenceScheme(Protocol):
    """One kind of evidence a client can present with a request."""

    name: str

    def extract(self, request: web.BaseRequest) -> Any | None:
        """Return the raw evidence, or None when the request carries none."""
        ...

    async def verify(self, ctx: Context, evidence: Any) -> Attestation:
        """Check the evidence; raise VerificationError when it does not hold."""
        ...
