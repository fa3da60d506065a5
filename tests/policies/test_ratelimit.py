"""GCRA: the pure math and the rate-limit keys (the stores' ``gcra`` is tested in their contract suite)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from popgate.policies import ratelimit as rl
from popgate.policies.model import Rate


class Clock:
    def __init__(self, t: float = 1_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Limiter:
    """The pure step over a dict of TATs (what the memory store does)."""

    def __init__(self, clock: Clock) -> None:
        self.clock, self.tat = clock, dict[str, float]()

    def hit(self, key: str, rate: Rate, cost: int = 1) -> rl.GcraResult:
        result = rl.gcra(self.tat.get(key), self.clock(), rate.interval, rate.burst, cost)
        if result.allowed:
            self.tat[key] = result.tat
        return result


def test_burst_then_steady_rate() -> None:
    """10/s with burst 4: 5 pass at once, the 6th waits 0.1 s; then one per 0.1 s."""
    clock = Clock()
    lim = Limiter(clock)
    rate = Rate(10, 1.0, burst=4)
    got = [lim.hit("k", rate) for _ in range(6)]
    assert [r.allowed for r in got] == [True] * 5 + [False]
    assert [r.remaining for r in got[:5]] == [4, 3, 2, 1, 0]
    assert got[5].retry_after == pytest.approx(0.1)
    clock.t += 0.1
    assert lim.hit("k", rate).allowed and not lim.hit("k", rate).allowed
    clock.t += 10
    assert lim.hit("k", rate).remaining == 4


def test_keys_are_independent_and_per_network() -> None:
    lim = Limiter(Clock())
    rate = Rate(1, 60.0)
    a, b = rl.network_key("203.0.113.5"), rl.network_key("203.0.113.200")
    assert a == b == "pg:{gcra:n:203.0.113.0/24}"
    assert (
        rl.network_key("2001:db8:0:1::1")
        == rl.network_key("2001:db8:0:1:ffff::9")
        != rl.network_key("2001:db8:0:2::1")
    )
    assert rl.network_key("10.1.2.3", v4_prefix=16) == "pg:{gcra:n:10.1.0.0/16}"
    assert lim.hit(a, rate).allowed and not lim.hit(b, rate).allowed
    assert lim.hit(rl.subject_key("alice"), rate).allowed


@settings(max_examples=200)
@given(
    st.lists(st.floats(0, 2.0), min_size=1, max_size=60),
    st.integers(1, 20),
    st.integers(0, 5),
    st.floats(0.5, 10),
)
def test_never_more_than_the_rate_allows(gaps: list[float], count: int, burst: int, period: float) -> None:
    """Over any window the allowed count is at most burst + 1 + window / T."""
    rate = Rate(count, period, burst)
    t, tat, allowed = 0.0, None, []
    for g in gaps:
        t += g
        r = rl.gcra(tat, t, rate.interval, rate.burst)
        if r.allowed:
            tat = r.tat
            allowed.append(t)
        else:
            assert r.retry_after > 0 and r.remaining == 0
    for i, start in enumerate(allowed):
        n = sum(1 for x in allowed[i:] if x <= allowed[-1])
        assert n <= burst + 1 + (allowed[-1] - start) / rate.interval + 1e-6
