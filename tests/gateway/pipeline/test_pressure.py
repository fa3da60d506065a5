"""Adaptive difficulty through the gateway (injected clock): a flood raises the bits, quiet lowers them;
pressure adds bits; recorded hashcash fixture stamps verify through the gateway."""

from __future__ import annotations

from pathlib import Path

from popgate.gateway.app import build_app
from popgate.gateway.extensions import default_extensions
from popgate.gateway.http.server import start
from popgate.gateway.ops.config import load_config
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.stores.memory import MemoryStore
from tests.conftest import admin_url, url_of
from tests.gateway.schemes.puzzle_support import puzzle_extra, way
from tests.support.servers import write_config

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "hashcash" / "stamps.tsv"
NOW = 1_795_219_200.0 + 3600  # 2026-11-20T01:00Z, the day the fixture stamps are dated
UA = {
    "User-Agent": "Mozilla/5.0 (X11) Firefox/130.0",
    "Accept": "application/json",
    "Accept-Language": "en",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Site": "none",
}


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


async def _gateway(tmp_path, upstream, clock, **kw):
    path = write_config(tmp_path, upstream, extra=puzzle_extra(tmp_path, **kw))
    config = load_config(path)
    gw = build_app(
        config,
        store=MemoryStore(clock=clock),
        clock=clock,
        metrics=Metrics(),
        extensions=default_extensions(),
    )
    return await start(config, gateway=gw)


async def _bits(http, running, path="/api/x", headers=UA):
    async with http.get(url_of(running, path), headers=headers) as r:
        assert r.status == 402
        return way(await r.json(), "puzzle")["bits"]


async def test_flood_raises_bits_and_quiet_brings_them_back(upstream, http, tmp_path):
    """150 requests/s from one /24 add floor(log2(rate/free_rate)) bits; other networks keep the floor;
    after a few half-lives of quiet the bits fall back to the floor. The metric follows."""
    clock = Clock(NOW)
    running = await _gateway(tmp_path, upstream, clock, floor=8, extra="free_rate = 2.0\nhalf_life = 10.0\n")
    try:
        assert await _bits(http, running) == 8
        for _ in range(20):  # a flood: 300 requests in 2 s
            clock.t += 0.1
            for _ in range(15):
                async with http.get(url_of(running, "/api/x"), headers=UA) as r:
                    assert r.status == 402
        flooded = await _bits(http, running)
        # the decaying estimate (half-life 10 s) reads ~20 req/s after 2 s: 3 doublings over 2 req/s
        assert flooded >= 11, flooded
        assert flooded <= 22
        async with http.get(admin_url(running, "/metrics")) as r:
            text = await r.text()
        assert f'popgate_puzzle_difficulty_bits{{scope="default"}} {float(flooded)}' in text
        clock.t += 120  # 12 half-lives of quiet
        assert await _bits(http, running) == 8
    finally:
        await running.stop()


async def test_flood_from_one_network_does_not_raise_anothers_bits(upstream, http, tmp_path):
    """Rate bits are per /24: a flooding network pays, its neighbour does not."""
    clock = Clock(NOW)
    path = write_config(
        tmp_path,
        upstream,
        extra=puzzle_extra(tmp_path, floor=8),
        server_extra='trusted_proxies = ["127.0.0.1/32"]',
    )
    config = load_config(path)
    running = await start(
        config,
        gateway=build_app(
            config, store=MemoryStore(clock=clock), clock=clock, extensions=default_extensions()
        ),
    )
    try:
        flood = {**UA, "X-Forwarded-For": "203.0.113.9"}
        for _ in range(200):
            async with http.get(url_of(running, "/api/x"), headers=flood) as r:
                assert r.status == 402
        assert await _bits(http, running, headers=flood) > 8
        assert await _bits(http, running, headers={**UA, "X-Forwarded-For": "198.51.100.1"}) == 8
    finally:
        await running.stop()


async def test_pressure_adds_bits_for_unverified_clients(upstream, http, tmp_path):
    """Event-loop lag over its threshold adds pressure_bits; it decays away when the lag is gone."""
    clock = Clock(NOW)
    running = await _gateway(tmp_path, upstream, clock, floor=8, pressure_bits=3)
    try:
        stage = running.gateway.policy.policy
        assert await _bits(http, running) == 8
        stage.monitor.sample(lag=0.5)  # what the periodic task measures under load
        assert await _bits(http, running) == 11
        stage.monitor.pressure.upstream_latency = 5.0
        assert await _bits(http, running) == 14
        stage.monitor.pressure.upstream_latency = 0.0
        for _ in range(8):
            stage.monitor.sample(lag=0.0)
        assert await _bits(http, running) == 8
        async with http.get(admin_url(running, "/metrics")) as r:
            assert 'popgate_puzzle_difficulty_bits{scope="global"} 8.0' in await r.text()
    finally:
        await running.stop()


async def test_pressure_monitor_measures_loop_lag(upstream, http, tmp_path):
    """The periodic task runs once the gateway serves requests, and a blocked loop shows up as lag."""
    import asyncio
    import time

    clock = Clock(NOW)
    running = await _gateway(tmp_path, upstream, clock, floor=8)
    try:
        await _bits(http, running)
        monitor = running.gateway.policy.policy.monitor
        assert monitor.task is not None and not monitor.task.done()
        await asyncio.sleep(0.3)
        time.sleep(0.4)  # block the loop
        await asyncio.sleep(0.3)
        assert monitor.pressure.loop_lag > 0.1
    finally:
        await running.stop()
    assert monitor.task is None


async def test_recorded_hashcash_stamps_verify_through_the_gateway(upstream, http, tmp_path):
    """The hashcash fixtures (made with the reference tool) pass on a route named v1 of host
    api.example.com when their bits reach the floor; once each; low-bit stamps are refused."""
    clock = Clock(NOW)
    running = await _gateway(tmp_path, upstream, clock, floor=8)
    try:
        rows = [line.split("\t") for line in FIXTURES.read_text().splitlines() if line.strip()]
        seen = 0
        for stamp, resource, bits, _ in rows:
            if resource != "api.example.com/v1":
                continue
            h = {**UA, "Host": "api.example.com", "X-Hashcash": stamp}
            async with http.get(url_of(running, "/v1/things"), headers=h) as r:
                assert r.status == (200 if int(bits) >= 16 else 402), stamp
                if r.status == 200:
                    assert (await r.json())["pop"]["PoP-Evidence"] == "hashcash"
                    seen += 1
            async with http.get(url_of(running, "/v1/things"), headers=h) as r:
                assert r.status == 402
        assert seen >= 4
    finally:
        await running.stop()
