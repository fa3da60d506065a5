"""Load shapes (locust ``LoadTestShape``): how many users, when. Each stops by
itself after ``POPGATE_LT_DURATION`` seconds (default 60) and peaks at
``POPGATE_LT_USERS`` users (default 40). Choose one with ``POPGATE_LT_SHAPE``
(``staged``, ``ramp``, ``spike``, ``flood``; ``none`` = locust's own
``-u/-r/-t``)."""

from __future__ import annotations

import os

from locust import LoadTestShape
from locust.runners import MasterRunner


class _Bounded(LoadTestShape):
    abstract = True

    def __init__(self) -> None:
        super().__init__()
        self.duration = float(os.environ.get("POPGATE_LT_DURATION", "60"))
        self.users = int(os.environ.get("POPGATE_LT_USERS", "40"))

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= self.duration:
            if isinstance(self.runner, MasterRunner) and self.runner.user_count:
                # Distributed: stop the workers and wait for them (their tallies reach the
                # master's gate first); a bare end of shape would only tell them to quit.
                self.runner.stop()
            return None
        return self.at(t / self.duration)

    def at(self, f: float) -> tuple[int, float]:
        raise NotImplementedError


class RampShape(_Bounded):
    """0 → peak over the first 60 %, hold, then down to a quarter for the last 10 %."""

    def at(self, f: float) -> tuple[int, float]:
        rate = max(1.0, self.users / (0.6 * self.duration))
        if f < 0.6:
            return max(1, round(self.users * f / 0.6)), rate
        return (self.users if f < 0.9 else max(1, self.users // 4)), self.users


class SpikeShape(_Bounded):
    """A quarter of the peak, a sudden spike to the peak for 20 %, back down."""

    def at(self, f: float) -> tuple[int, float]:
        base = max(1, self.users // 4)
        return (self.users if 0.4 <= f < 0.6 else base), float(self.users)


class FloodShape(_Bounded):
    """The peak at once, held: a sustained flood."""

    def at(self, f: float) -> tuple[int, float]:
        return self.users, float(self.users)


class StagedShape(_Bounded):
    """All three in one run: ramp (0–25 %), sustained (25–55 %), spike to 1.5×
    the peak (55–70 %), sustained again (70–100 %)."""

    def at(self, f: float) -> tuple[int, float]:
        if f < 0.25:
            return max(1, round(self.users * f / 0.25)), max(1.0, self.users / (0.25 * self.duration))
        if 0.55 <= f < 0.7:
            return round(self.users * 1.5), float(self.users)
        return self.users, float(self.users)


SHAPES = {"staged": StagedShape, "ramp": RampShape, "spike": SpikeShape, "flood": FloodShape}
