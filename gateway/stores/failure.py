"""Failure modes: what an action does when the store cannot answer.

Each action (``spend``, ``debit``, ``rate_limit``, ``budget``, ...) fails
*closed* unless the operator configured it open (``[store.failure_mode]``).
Closed: the request gets 503 with Retry-After. Open: the action's permissive
result is used and ``popgate_fail_open_total{action}`` counts it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from popgate.gateway.errors import StoreFailure
from popgate.gateway.ops.config import StoreConfig
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.stores.base import StoreUnavailable

T = TypeVar("T")
log = logging.getLogger("popgate.store")


class FailurePolicy:
    """Applies the configured failure mode around store calls."""

    __slots__ = ("_config", "_metrics")

    def __init__(self, config: StoreConfig, metrics: Metrics) -> None:
        self._config = config
        self._metrics = metrics

    def is_open(self, action: str) -> bool:
        return self._config.mode(action) == "open"

    async def guard(self, action: str, op: Awaitable[T], open_value: T) -> T:
        """Await ``op``; on StoreUnavailable fail open (``open_value``) or closed.

        Raises StoreFailure (503) when the action fails closed.
        """
        try:
            return await op
        except StoreUnavailable as exc:
            self._metrics.store_errors.labels(action).inc()
            if self.is_open(action):
                self._metrics.fail_open.labels(action).inc()
                log.warning("store unavailable, %s fails open: %s", action, exc)
                return open_value
            log.warning("store unavailable, %s fails closed: %s", action, exc)
            raise StoreFailure(str(exc)) from None


class GuardedClaims:
    """A store's ``claim`` under the failure mode of ``action``, for verifiers that
    spend as they verify (``verifiers.puzzle.verify``): a store outage then answers
    as that action is configured (503, or open) instead of escaping as an error."""

    __slots__ = ("_action", "_policy", "_store")

    def __init__(self, store: Any, policy: FailurePolicy, action: str) -> None:
        self._store, self._policy, self._action = store, policy, action

    async def claim(self, key: str, ttl: float, limit: int = 1) -> bool:
        won: bool = await self._policy.guard(self._action, self._store.claim(key, ttl, limit), True)
        return won
