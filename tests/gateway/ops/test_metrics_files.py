"""Batched writes of worker metrics to prometheus_client's multiprocess files."""

from __future__ import annotations

import threading
import time

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector

from popgate.gateway.ops import metrics_files


@pytest.fixture
def batched(tmp_path, monkeypatch):
    """This process on batched multiprocess values in ``tmp_path`` (restored after)."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    monkeypatch.setattr(values, "ValueClass", metrics_files.batched_value_class())
    yield tmp_path
    metrics_files.flush()


def on_disk(path) -> dict[str, float]:
    """What a scrape by any worker would read: the aggregated files."""
    reg = CollectorRegistry()
    MultiProcessCollector(reg, path=str(path))
    return {
        s.name + str(sorted(s.labels.items())): s.value
        for m in reg.collect()
        for s in m.samples
        if "pid" not in s.labels
    }


def test_increments_reach_the_files_on_flush_exactly(batched):
    reg = CollectorRegistry()
    c = Counter("pg_test_total", "t", ["kind"], registry=reg)
    h = Histogram("pg_test_seconds", "t", buckets=(0.1, 1.0), registry=reg)
    for _ in range(5):
        c.labels("a").inc()
    h.observe(0.5)
    assert on_disk(batched).get("pg_test_total[('kind', 'a')]", 0.0) == 0.0, "not written yet"
    assert c.labels("a")._value.get() == 5, "but counted in memory"
    metrics_files.flush()
    seen = on_disk(batched)
    assert seen["pg_test_total[('kind', 'a')]"] == 5
    assert seen["pg_test_seconds_bucket[('le', '1.0')]"] == 1
    assert seen["pg_test_seconds_bucket[('le', '0.1')]"] == 0
    assert seen["pg_test_seconds_sum[]"] == 0.5


def test_concurrent_increments_from_threads_are_not_lost(batched):
    reg = CollectorRegistry()
    c = Counter("pg_threads_total", "t", registry=reg)

    def work() -> None:
        for _ in range(20_000):
            c.inc()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        metrics_files.flush()  # flushing meanwhile must not lose or double anything
    metrics_files.flush()
    assert on_disk(batched)["pg_threads_total[]"] == 80_000


def test_the_flusher_thread_writes_within_its_period(batched):
    reg = CollectorRegistry()
    g = Gauge("pg_level", "t", multiprocess_mode="livesum", registry=reg)
    stop = metrics_files.start_flusher(0.02)
    try:
        g.set(7)
        deadline = time.monotonic() + 2
        while on_disk(batched).get("pg_level[]") != 7 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert on_disk(batched)["pg_level[]"] == 7
    finally:
        stop.set()
