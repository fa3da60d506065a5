"""Worker metrics in shared files, written in batches.

With ``--workers N`` every worker keeps its numbers in prometheus_client's
multiprocess files (mmap), so that whichever worker answers ``/metrics``
reports all of them. prometheus_client writes the file on every ``inc()``
(a lock, a pid check, a struct pack into the mmap): about 23 µs per proxied
request over the ~10 instruments a request touches, 10 % of a worker's CPU.

:func:`batched_value_class` keeps prometheus_client's file format and
aggregation, but an ``inc()``/``set()`` only updates the value in memory and
marks it dirty; a flusher thread writes the dirty values every
``FLUSH_SECONDS``, and :func:`flush` writes them at once (before this worker
answers a scrape, and when it exits). The cost: another worker's latest
increments reach a scrape up to ``FLUSH_SECONDS`` late, and a worker killed
with SIGKILL loses at most that much of its metric increments (never a ledger
entry: those live in the store).
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import values

FLUSH_SECONDS = 0.1

_lock = threading.Lock()
_dirty: set[Any] = set()


def flush() -> None:
    """Write every value changed since the last flush to this process's files."""
    with _lock:
        pending = list(_dirty)
        _dirty.clear()
        for v in pending:
            v._file.write_value(v._key, v._value, v._timestamp)


def batched_value_class() -> type:
    """A prometheus_client value class for this (forked) process, writing in batches.

    Install it with ``prometheus_client.values.ValueClass = batched_value_class()``
    before any metric is created in the process, then :func:`start_flusher`.
    """
    base: Any = values.MultiProcessValue()  # type: ignore[no-untyped-call]

    class BatchedValue(base):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            with _lock:  # every mmap write of this process happens under _lock
                super().__init__(*args, **kwargs)

        def inc(self, amount: float) -> None:
            with _lock:
                self._value += amount
                self._timestamp = 0.0
                _dirty.add(self)

        def set(self, value: float, timestamp: float | None = None) -> None:
            with _lock:
                self._value = value
                self._timestamp = timestamp or 0.0
                _dirty.add(self)

        def get(self) -> float:
            with _lock:
                return float(self._value)

    return BatchedValue


def start_flusher(interval: float = FLUSH_SECONDS) -> threading.Event:
    """A daemon thread that flushes every ``interval`` seconds; set the returned
    event to stop it."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            flush()

    threading.Thread(target=loop, name="popgate-metrics-flush", daemon=True).start()
    return stop
