"""Adaptive difficulty: floors, rate doubling bits, pressure bits, ceiling."""

from __future__ import annotations

import pytest

from popgate.policies.difficulty import Difficulty, DifficultyConfig, Pressure

NET = "203.0.113.0/24"


def flood(d: Difficulty, t: float, rps: float, seconds: float, net: str = NET) -> float:
    step = 1.0 / rps
    end = t + seconds
    while t < end:
        d.observe(net, t)
        t += step
    return t


def test_quiet_network_gets_the_floor() -> None:
    d = Difficulty(DifficultyConfig(class_floor={"unknown": 16, "agent": 14}))
    assert d.bits("unknown", NET, 0.0) == 16
    assert d.bits("agent", NET, 0.0) == 14
    assert d.bits("unknown", NET, 0.0, route_floor=20) == 20
    assert d.bits("human", NET, 0.0) == 0


def test_flood_raises_then_falls_back() -> None:
    """A 90 req/s flood (free 2/s, so 45x: 5 doublings) adds 5 bits; after it stops it falls back."""
    d = Difficulty(DifficultyConfig(free_rate=2.0, half_life=10.0))
    t = flood(d, 0.0, 90.0, 80.0)
    assert d.rate(NET, t) == pytest.approx(90, rel=0.02)
    assert d.bits("unknown", NET, t) == 16 + 5
    assert d.bits("unknown", "198.51.100.0/24", t) == 16  # other networks unaffected
    assert d.bits("unknown", NET, t + 30) == 16 + 2  # three half-lives later: ~11 req/s
    assert d.bits("unknown", NET, t + 120) == 16


def test_each_doubling_adds_one_bit() -> None:
    bits = []
    for rps in (1.5, 3, 6, 12, 24, 48, 96):  # 1.5x the free rate, then doublings
        d = Difficulty(DifficultyConfig(free_rate=2.0, half_life=5.0))
        t = flood(d, 0.0, rps, 60.0)
        bits.append(d.bits("unknown", NET, t) - 16)
    assert bits == [0, 0, 1, 2, 3, 4, 5]


def test_pressure_adds_bits_only_for_unverified() -> None:
    p = Pressure()
    d = Difficulty(
        DifficultyConfig(pressure_bits=2, class_floor={"unknown": 16, "agent": 16, "account": 4}), p
    )
    p.in_flight, p.loop_lag = 10_000, 0.2
    assert d.bits("unknown", NET, 0.0) == 20 and d.bits("agent", NET, 0.0) == 20
    assert d.bits("account", NET, 0.0) == 4
    p.upstream_latency = 5.0
    assert d.bits("unknown", NET, 0.0) == 22
    p.in_flight, p.loop_lag, p.upstream_latency = 0, 0.0, 0.0
    assert d.bits("unknown", NET, 0.0) == 16


def test_ceiling() -> None:
    p = Pressure(in_flight=10**6, loop_lag=9, upstream_latency=9)
    d = Difficulty(DifficultyConfig(ceiling=22), p)
    t = flood(d, 0.0, 500.0, 30.0)
    assert d.bits("unknown", NET, t, route_floor=20) == 22


def test_bounded_table_and_bad_config() -> None:
    d = Difficulty(DifficultyConfig(max_networks=10))
    for i in range(100):
        d.observe(f"10.0.{i}.0/24", float(i))
        assert d.tracked() <= 10
    assert d.rate("10.0.99.0/24", 99.0) > 0, "the newest networks are kept"
    assert d.rate("10.0.0.0/24", 99.0) == 0, "the oldest are dropped"
    with pytest.raises(ValueError):
        DifficultyConfig(ceiling=50)
    with pytest.raises(ValueError):
        DifficultyConfig(class_floor={"unknown": 30}, ceiling=20)


def test_a_busy_network_survives_a_flood_of_new_ones() -> None:
    """A network that keeps sending is never dropped, however many one-off networks
    pass (they fill the table and rotate out); its rate is not reset."""
    d = Difficulty(DifficultyConfig(max_networks=100, half_life=30.0))
    t = 0.0
    for i in range(5000):
        t += 0.01
        d.observe(NET, t)
        d.observe(f"10.{i // 256}.{i % 256}.0/24", t)
        assert d.tracked() <= 100
    assert d.rate(NET, t) > 50, "about 100 requests/s, still tracked"
