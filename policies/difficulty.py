"""Adaptive puzzle difficulty: a floor, rate bits, pressure bits, a ceiling.

``bits = min(ceiling, max(floor(route, class), ...) + rate_bits + pressure_bits)``

- *floor*: the larger of the route's ``min_bits`` (from the policy action) and
  the class floor in :class:`DifficultyConfig`;
- *rate bits*: each network prefix (/24, /64) has a request-rate estimate (an
  exponentially decaying count, half-life ``half_life`` seconds). At
  ``free_rate`` requests/s or below it adds nothing; each doubling above adds
  one bit: ``floor(log2(rate / free_rate))``;
- *pressure bits*: for unverified classes only (``agent``, ``unknown``), the
  gateway's :class:`Pressure` (in-flight requests, event-loop lag, upstream
  latency) adds ``pressure_bits`` per signal over its threshold;
- *ceiling*: never more than ``ceiling`` bits (an honest client must still
  finish: ~1 M hashes/s in CPython, far less in a phone's browser).

Pure apart from its bounded table of rate estimates; time comes in as ``now``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

UNVERIFIED = frozenset({"agent", "unknown"})


@dataclass(slots=True)
class Pressure:
    """Live load signals; the gateway updates the fields, difficulty reads them."""

    in_flight: int = 0
    loop_lag: float = 0.0  # seconds
    upstream_latency: float = 0.0  # seconds, recent p50 or EWMA


@dataclass(frozen=True, slots=True)
class DifficultyConfig:
    class_floor: dict[str, int] = field(default_factory=lambda: {"unknown": 16, "agent": 16})
    ceiling: int = 26
    free_rate: float = 2.0  # requests/s per network before rate bits start
    half_life: float = 30.0  # seconds
    in_flight_high: int = 512
    loop_lag_high: float = 0.05
    upstream_latency_high: float = 1.0
    pressure_bits: int = 2
    max_networks: int = 100_000

    def __post_init__(self) -> None:
        if not 0 < self.ceiling <= 40 or self.free_rate <= 0 or self.half_life <= 0:
            raise ValueError("ceiling in 1..40, free_rate and half_life > 0")
        if any(not 0 <= b <= self.ceiling for b in self.class_floor.values()):
            raise ValueError("class floors must be within 0..ceiling")


class Difficulty:
    """Tracks per-network request rates and answers the bits to ask for.

    At most ``max_networks`` networks are tracked, in two generations of half that
    each: a full current generation becomes the old one (the previous old one is
    dropped), and a network seen again moves back to the current one. So the
    networks dropped are those not seen for a whole generation, at O(1) per request
    (evicting the oldest entry of one dict costs a scan over its deleted slots).
    """

    __slots__ = ("_decay", "_half", "_old", "_rates", "config", "pressure")

    def __init__(self, config: DifficultyConfig, pressure: Pressure | None = None) -> None:
        self.config = config
        self.pressure = pressure if pressure is not None else Pressure()
        self._rates: dict[str, tuple[float, float]] = {}  # network -> (count, at): current
        self._old: dict[str, tuple[float, float]] = {}  # the previous generation
        self._half = max(1, config.max_networks // 2)
        self._decay = math.log(2) / config.half_life

    def tracked(self) -> int:
        """How many networks are tracked now (at most ``max_networks``)."""
        return len(self._rates) + len(self._old)

    def observe(self, network: str, now: float, n: int = 1) -> None:
        """Count ``n`` requests from ``network`` at ``now``."""
        rates = self._rates
        prev = rates.get(network)
        if prev is None:
            prev = self._old.pop(network, None)
            if len(rates) >= self._half:
                self._old, self._rates = rates, {}
                rates = self._rates
        count, at = prev if prev is not None else (0.0, now)
        rates[network] = (count * math.exp(-self._decay * max(0.0, now - at)) + n, now)

    def rate(self, network: str, now: float) -> float:
        """Estimated requests/s from ``network`` (decayed count × ln2 / half-life)."""
        hit = self._rates.get(network) or self._old.get(network)
        count, at = hit if hit is not None else (0.0, now)
        return count * math.exp(-self._decay * max(0.0, now - at)) * self._decay

    def rate_bits(self, network: str, now: float, rate: float | None = None) -> int:
        """Bits for ``network``'s request rate (``rate``: already computed at ``now``)."""
        r = self.rate(network, now) if rate is None else rate
        return int(math.log2(r / self.config.free_rate)) if r >= 2 * self.config.free_rate else 0

    def pressure_bits(self) -> int:
        c, p = self.config, self.pressure
        signals = (
            p.in_flight > c.in_flight_high,
            p.loop_lag > c.loop_lag_high,
            p.upstream_latency > c.upstream_latency_high,
        )
        return c.pressure_bits * sum(signals)

    def bits(
        self, klass: str, network: str, now: float, route_floor: int = 0, rate: float | None = None
    ) -> int:
        """Bits to ask of a client of ``klass`` from ``network`` on a route whose
        policy floor is ``route_floor`` (``rate``: the network's, already computed at ``now``)."""
        c = self.config
        b = max(route_floor, c.class_floor.get(klass, 0)) + self.rate_bits(network, now, rate)
        if klass in UNVERIFIED:
            b += self.pressure_bits()
        return min(b, c.ceiling)
