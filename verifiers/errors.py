"""The one exception family verifiers raise.

``reason`` is a short, stable, machine-readable code (``bad_signature``,
``expired``, ``nullifier_reused``...) that is safe to show a client; ``detail``
is for logs only and may be more specific.
"""

from __future__ import annotations


class VerificationError(Exception):
    """Evidence did not verify. ``reason`` is public, ``detail`` private."""

    reason: str = "invalid"

    def __init__(self, reason: str | None = None, detail: str = "") -> None:
        if reason is not None:
            self.reason = reason
        self.detail = detail
        super().__init__(f"{self.reason}: {detail}" if detail else self.reason)

    def __reduce__(self) -> tuple[object, ...]:
        # Survives pickling across a process pool with reason and detail intact.
        return (_rebuild, (type(self), self.reason, self.detail))


def _rebuild(cls: type[VerificationError], reason: str, detail: str) -> VerificationError:
    return cls(reason, detail)


class Malformed(VerificationError):
    """The input could not be parsed at all."""

    reason = "malformed"


class Replayed(VerificationError):
    """A spend-once item (stamp, nonce, solution) was already spent."""

    reason = "replayed"
