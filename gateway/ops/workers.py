"""Running one or several worker processes on one port.

With ``--workers N`` (N > 1) the parent forks N workers; each has its own
event loop (uvloop when installed) and listens on the proxy *and* the admin
port with SO_REUSEPORT, so the kernel spreads connections over them. The
parent only supervises:

- SIGTERM / SIGINT are forwarded; every worker stops accepting, drains its
  in-flight requests (``shutdown_timeout``) and exits; the parent exits 0.
- SIGHUP is forwarded; each worker reloads its policy (``gateway.reload``).
- a worker that dies (crash, OOM kill) is replaced; a worker that dies within
  a second of starting, five times in a row, stops the whole run (exit 1):
  that is a configuration problem (port taken), not a transient crash.

Metrics: workers share a per-run ``PROMETHEUS_MULTIPROC_DIR`` (prometheus
client multiprocess mode; an operator-set one is used and emptied at start),
and ``/metrics`` on the shared admin port aggregates every worker's numbers,
whichever worker answers (:func:`gateway.ops.status.scrape_registry`). Each worker writes its
numbers to the files in batches (:mod:`gateway.ops.metrics_files`: every 0.1 s, and before it
answers a scrape), so another worker's last 0.1 s may be missing from a scrape. Counters of a
replaced worker stay in the total, so counters never go backwards; its gauges go.

The embedded SQLite store is safe across the workers of one host (WAL, one
connection per worker, atomic statements); ``memory://`` is refused because
each worker would have its own.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

from prometheus_client import values
from prometheus_client.multiprocess import mark_process_dead

from popgate.gateway.http.server import serve
from popgate.gateway.ops.config import Config
from popgate.gateway.ops.metrics_files import batched_value_class, flush, start_flusher
from popgate.gateway.ops.status import MULTIPROC_ENV

log = logging.getLogger("popgate.workers")
FAST_EXIT_SECONDS = 1.0
MAX_FAST_EXITS = 5
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def loop_runner() -> asyncio.Runner:
    """The event loop a serving process runs on: uvloop when installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - optional speed-up
        return asyncio.Runner()
    return asyncio.Runner(loop_factory=uvloop.new_event_loop)


def _run_one(config: Config, reuse_port: bool) -> None:
    with loop_runner() as runner:
        runner.run(serve(config, reuse_port=reuse_port))


def _worker_main(config: Config) -> None:
    """Entry point of a forked worker (forked with SIGNALS blocked: see Supervisor.spawn)."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
    # prometheus_client picked its value class at import, in the parent;
    # switch this process to the shared files (written in batches).
    values.ValueClass = batched_value_class()
    start_flusher()
    try:
        _run_one(config, reuse_port=True)
    finally:
        flush()  # a forked process leaves through os._exit: no atexit
        # multiprocessing's exit handler joins our children: one a cleanup
        # missed (a proof pool process) would keep this worker alive for ever.
        for child in multiprocessing.active_children():
            child.terminate()


def _prepare_multiproc_dir() -> tuple[str, bool]:
    """A per-run metrics directory: the operator's (emptied) or a fresh one."""
    path = os.environ.get(MULTIPROC_ENV)
    if path:
        os.makedirs(path, exist_ok=True)
        for f in glob.glob(os.path.join(path, "*.db")):
            os.unlink(f)
        return path, False
    path = tempfile.mkdtemp(prefix="popgate-metrics-")
    os.environ[MULTIPROC_ENV] = path
    return path, True


def _forget_worker(path: str, pid: int) -> None:
    """Drop a dead worker's gauges (its counters stay in the totals)."""
    mark_process_dead(pid, path)  # type: ignore[no-untyped-call]
    for f in glob.glob(os.path.join(path, f"gauge_*_{pid}.db")):
        os.unlink(f)


class Supervisor:
    """The parent of ``n`` workers: forwards signals, replaces dead workers."""

    def __init__(self, config: Config, n: int, metrics_dir: str) -> None:
        self.config, self.n, self.metrics_dir = config, n, metrics_dir
        self.ctx = multiprocessing.get_context("fork")
        self.procs: list[Any] = []
        self.started: dict[int, float] = {}
        self.stopping = False
        self.fast_exits = 0

    def spawn(self, index: int) -> Any:
        # Fork with our signals blocked: the child must not run the parent's
        # handlers before it has installed its own.
        p = self.ctx.Process(
            target=_worker_main, args=(self.config,), name=f"popgate-worker-{index}", daemon=False
        )
        old = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
        try:
            p.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if p.pid is None:
            raise RuntimeError(f"worker {index} did not start")
        self.started[p.pid] = time.monotonic()
        log.info("worker %d started (pid %d)", index, p.pid)
        return p

    def forward(self, sig: int, _frame: object = None) -> None:
        if sig in (signal.SIGTERM, signal.SIGINT):
            self.stopping = True
        for p in self.procs:
            if p.pid is not None and p.exitcode is None:
                try:
                    os.kill(p.pid, sig)
                except ProcessLookupError:
                    pass

    def run(self) -> int:
        for sig in SIGNALS:
            signal.signal(sig, self.forward)
        for i in range(self.n):
            if self.stopping:
                break
            self.procs.append(self.spawn(i))
        status = 0
        while any(p.exitcode is None for p in self.procs):
            multiprocessing.connection.wait(
                [p.sentinel for p in self.procs if p.exitcode is None], timeout=0.5
            )
            for i, p in enumerate(self.procs):
                if p.exitcode is None or self.stopping:
                    continue
                p.join()
                lived = time.monotonic() - self.started.pop(p.pid, 0.0)
                log.warning(
                    "worker %d (pid %d) exited with %s after %.1fs; starting another",
                    i,
                    p.pid,
                    p.exitcode,
                    lived,
                )
                _forget_worker(self.metrics_dir, p.pid)
                self.fast_exits = self.fast_exits + 1 if lived < FAST_EXIT_SECONDS else 0
                if self.fast_exits >= MAX_FAST_EXITS:
                    log.error("workers keep exiting right after start; giving up")
                    self.forward(signal.SIGTERM)
                    status = 1
                    break
                self.procs[i] = self.spawn(i)
        for p in self.procs:
            p.join()
            if not self.stopping:
                status = status or (p.exitcode or 0)
        return status


def run_workers(config: Config, workers: int) -> int:
    """Run ``workers`` processes (1 = this process); return an exit status."""
    if workers <= 1:
        _run_one(config, reuse_port=False)
        return 0
    if config.store.url.startswith("memory://"):
        print(
            "popgate: --workers > 1 needs a shared store (sqlite:/// or redis://), "
            "not memory://: each worker would spend, count and debit on its own",
            file=sys.stderr,
        )
        return 2
    path, owned = _prepare_multiproc_dir()
    try:
        return Supervisor(config, workers, path).run()
    finally:
        if owned:
            shutil.rmtree(path, ignore_errors=True)


def worker_pids(parent: int) -> list[int]:
    """The live worker pids of a parent (Linux ``/proc``), for tests and tools."""
    try:
        with open(f"/proc/{parent}/task/{parent}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []
