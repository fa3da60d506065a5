"""Store keys and what a verified piece of evidence leaves to spend.

Verifiers are pure: they parse, verify and raise, and return a :class:`Spend`
naming the spend-once (or counted) item the caller must claim in its store:
a puzzle challenge, a hashcash stamp, a signature nonce, a payment nonce, a
World ID nullifier. The gateway (and ``popgate verify``) claims it and, when
the claim is refused, raises :meth:`Spend.refused`.

:func:`key` is the one spelling of every store key, ``pg:{kind:ident}``
(``gateway.stores.base`` re-exports it). Keys are shared by every instance of
a fleet, so their bytes never change.
"""

from __future__ import annotations

from dataclasses import dataclass

from popgate.verifiers.errors import Replayed, VerificationError


def key(kind: str, ident: str) -> str:
    """Return the storage key for ``ident`` in namespace ``kind``.

    The namespace sits in a Redis Cluster hash tag only together with the
    identifier, so keys spread over slots: ``pg:{kind:ident}``.
    """
    return f"pg:{{{kind}:{ident}}}"


@dataclass(frozen=True, slots=True)
class Spend:
    """Claim ``key(kind, ident)`` for ``ttl`` seconds, at most ``limit`` uses.

    ``reason`` and ``detail`` make the error raised when the claim is
    refused (``replayed`` unless the scheme has its own reason).
    """

    kind: str
    ident: str
    ttl: float
    limit: int = 1
    reason: str = "replayed"
    detail: str = ""

    @property
    def key(self) -> str:
        """The store key to claim."""
        return key(self.kind, self.ident)

    def refused(self) -> VerificationError:
        """The error for a refused claim (already spent)."""
        if self.reason == Replayed.reason:
            return Replayed(detail=self.detail)
        return VerificationError(self.reason, self.detail)
