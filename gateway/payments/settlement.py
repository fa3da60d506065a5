"""The settlement worker: a background task that retries pending x402
settlements kept in the store (:class:`gateway.payments.facilitator.SettlementQueue`).

A background task of the gateway: :meth:`SettlementWorker.start` runs with
``Gateway.start()`` (server start-up), :meth:`SettlementWorker.stop` with
``Gateway.close()``. Every gateway sharing
a store runs one; per-attempt leases in the store keep two workers from
settling the same record at once. A crash loses nothing: the records stay
in the store until a facilitator gives a final answer. That includes a
settle-before record whose inline ``/settle`` got no answer: the payment is
held (see :mod:`gateway.payments.x402`) and the worker keeps asking until
the facilitator settles it (or reports its nonce spent by that very call)
or rejects it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger("popgate.settlement")


class SettlementWorker:
    """Runs ``queue.run_once(now)`` every ``interval`` seconds."""

    def __init__(
        self, queue: Callable[[], Awaitable[Any]], clock: Callable[[], float], interval: float, metrics: Any
    ) -> None:
        self._queue = queue
        self._clock = clock
        self.interval = interval
        self._metrics = metrics
        self._task: asyncio.Task[None] | None = None
        self._stopped = False
        self.rounds = 0

    def ensure_started(self) -> bool:
        """Start the loop if a loop is running and it is not started yet."""
        if self._task is not None or self._stopped:
            return self._task is not None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return False
        self._task = loop.create_task(self._run(), name="popgate-settlement")
        return True

    async def start(self) -> None:
        """Background task start (``Gateway.start()``)."""
        self.ensure_started()

    async def run_once(self) -> list[tuple[int, str]]:
        """One pass over the due records; returns (id, outcome) pairs."""
        queue = await self._queue()
        out = await queue.run_once(self._clock())
        for _, outcome in out:
            self._metrics.settlements.labels(outcome).inc()
        self.rounds += 1
        return list(out)

    async def _run(self) -> None:
        while not self._stopped:
            try:
                out = await self.run_once()
                if out:
                    log.info("settlement pass: %s", out)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                task = asyncio.current_task()
                if self._stopped or (task is not None and task.cancelling()):
                    return  # stop() cancelled us and a client turned that into an error
                log.warning("settlement pass failed: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
