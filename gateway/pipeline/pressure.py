"""Load signals for adaptive puzzle difficulty, and the ``[difficulty]`` table.

:class:`PressureMonitor` keeps a :class:`policies.difficulty.Pressure` up to
date from a periodic task (every ``interval`` seconds), a background task of
the gateway: :meth:`PressureMonitor.start` runs with ``Gateway.start()``
(server start-up), :meth:`PressureMonitor.stop` with ``Gateway.close()``:

- in-flight requests: read from the ``popgate_inflight_requests`` gauge the
  request handler already maintains (no extra work per request);
- event-loop lag: how late the periodic sleep wakes up (decays by half per tick);
- upstream latency: an EWMA fed by :meth:`observe_upstream` (the policy stage
  samples one allowed request in eight).

Each tick also publishes ``popgate_puzzle_difficulty_bits{scope="global"}``:
what an unverified client from a quiet network is asked right now.

:func:`collect_difficulty` validates the ``[difficulty]`` table (called by
the config loader, in the same pass as every other table).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.ops.validation import Collector, ConfigError
from popgate.policies.difficulty import Difficulty, DifficultyConfig, Pressure

log = logging.getLogger("popgate.pressure")
_NUMBERS = (
    "ceiling",
    "free_rate",
    "half_life",
    "in_flight_high",
    "loop_lag_high",
    "upstream_latency_high",
    "pressure_bits",
    "max_networks",
)


def difficulty_config(table: Any) -> DifficultyConfig:
    """Build :class:`DifficultyConfig` from the ``[difficulty]`` table; raises
    ConfigError listing every problem (see :func:`collect_difficulty`)."""
    problems: list[str] = []
    got = collect_difficulty(Collector({}, problems), table)
    if got is None:
        raise ConfigError(problems)
    return got


def collect_difficulty(c: Collector, table: Any) -> DifficultyConfig | None:
    """Validate the ``[difficulty]`` table; None after recording problems in ``c``.

    Keys: ``class_floor = {unknown = 16, agent = 16}``, ``ceiling``,
    ``free_rate`` (requests/s per network before rate bits), ``half_life``,
    ``in_flight_high``, ``loop_lag_high`` and ``upstream_latency_high``
    (seconds), ``pressure_bits``, ``max_networks``.
    """
    if table is None:
        return DifficultyConfig()
    problems: list[str] = []
    if not isinstance(table, dict):
        c.problem("difficulty", "expected a table")
        return None
    defaults = DifficultyConfig()
    values: dict[str, Any] = {}
    for k, v in table.items():
        where = f"difficulty.{k}"
        if k == "class_floor":
            if not isinstance(v, dict) or not all(
                isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 40 for b in v.values()
            ):
                problems.append(f"{where}: expected a table of class = bits (0..40)")
            else:
                values[k] = {**defaults.class_floor, **v}  # merge: naming one class keeps the others
        elif k in _NUMBERS:
            want_int = isinstance(getattr(defaults, k), int)
            ok = isinstance(v, int) if want_int else isinstance(v, (int, float))
            if not ok or isinstance(v, bool) or v < 0:
                problems.append(
                    f"{where}: expected a non-negative {'integer' if want_int else 'number'}, got {v!r}"
                )
            else:
                values[k] = v
        else:
            problems.append(f"{where}: unknown key (expected one of: class_floor, {', '.join(_NUMBERS)})")
    if not problems:
        try:
            return DifficultyConfig(**values)
        except ValueError as exc:
            problems.append(f"difficulty: {exc}")
    c.problems.extend(problems)
    return None


class PressureMonitor:
    """Updates ``pressure`` from a periodic task; see the module docstring."""

    def __init__(
        self, difficulty: Difficulty, metrics: Metrics, interval: float = 0.25, alpha: float = 0.1
    ) -> None:
        self.difficulty = difficulty
        self.pressure: Pressure = difficulty.pressure
        self.metrics = metrics
        self.interval = interval
        self.alpha = alpha
        self.task: asyncio.Task[None] | None = None
        self._global = metrics.difficulty.labels("global")

    def observe_upstream(self, seconds: float) -> None:
        p = self.pressure
        p.upstream_latency += self.alpha * (seconds - p.upstream_latency)

    def ensure_started(self) -> None:
        """Start the periodic task if it is not running (needs a running loop)."""
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._run(), name="popgate-pressure")

    async def start(self) -> None:
        """Background task start (``Gateway.start()``)."""
        self.ensure_started()

    async def stop(self) -> None:
        """Background task stop (``Gateway.close()``)."""
        await self.close()

    def sample(self, lag: float) -> None:
        """One tick: fold in ``lag`` and the in-flight gauge, publish the global bits."""
        p = self.pressure
        p.loop_lag = max(lag, p.loop_lag * 0.5)
        p.in_flight = self.metrics.in_flight
        c = self.difficulty.config
        self._global.set(min(c.ceiling, c.class_floor.get("unknown", 0) + self.difficulty.pressure_bits()))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            t0 = loop.time()
            await asyncio.sleep(self.interval)
            self.sample(max(0.0, loop.time() - t0 - self.interval))

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await self.task
            self.task = None
