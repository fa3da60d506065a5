"""The current compiled policy of a gateway, swapped atomically on reload."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from popgate.policies.engine import Policy
from popgate.policies.loader import PolicyError, load


class PolicyHolder:
    """Holds the current :class:`Policy`; swaps it atomically on reload.

    Readers take ``holder.current`` once per request and use that object to
    the end, so a reload never mixes two policies in one decision.
    """

    __slots__ = ("current", "path")

    def __init__(self, policy: Policy, path: str | Path | None = None) -> None:
        self.current = policy
        self.path = Path(path) if path is not None else None

    def reload(
        self, path: str | Path | None = None, vet: Callable[[Policy], Sequence[str]] | None = None
    ) -> Policy:
        """Compile the file again and swap it in. Raises
        :class:`policies.loader.PolicyError` (keeping the old policy) when the
        new file is invalid or ``vet`` finds problems with it (the gateway's dead-end check)."""
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no policy file to reload")
        policy = load(target)
        problems = vet(policy) if vet is not None else ()
        if problems:
            raise PolicyError(list(problems))
        self.current = policy
        self.path = target
        return policy
