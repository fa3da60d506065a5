"""A bounded process pool for Groth16 checks: off the loop, never twice, never unbounded.

A pure-Python pairing holds the GIL for ~10 ms, so proofs are checked in a
:class:`~concurrent.futures.ProcessPoolExecutor` whose workers prepare the
key once at start-up. :class:`ProofPool` adds, in front of the executor:

- a verdict cache (LRU, proof hash → ``None`` | ``(reason, detail)``): a
  proof is never paired twice;
- coalescing: identical proofs in flight share one future;
- a depth limit: beyond ``workers + queue_limit`` jobs in flight a new job
  is refused with :class:`~gateway.errors.Overloaded` (503 + Retry-After)
  instead of queueing without bound.

``popgate_verify_queue_depth`` shows the jobs waiting for a worker and
``popgate_verification_seconds{scheme}`` the time per pooled check.

A worker that dies (SIGKILL, OOM killer) breaks a ProcessPoolExecutor for
good (``BrokenProcessPool`` on every later submit). With a ``restart``
factory the pool replaces the broken executor: jobs that were in flight fail
with 503 ``verifier_unavailable`` + Retry-After (counted by the endpoint in
``popgate_evidence_total{result="verifier_unavailable"}``; not retried, in
case the job itself killed the worker); a job that finds the executor already
broken at submit time never ran, so it is submitted once more to the new one.
``restarts`` counts the replacements.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import json
import logging
import math
import multiprocessing
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from popgate.gateway.errors import Overloaded
from popgate.gateway.ops.metrics import Metrics
from popgate.verifiers.groth16 import prepared_key, raise_job_result, verify_job

Verdict = tuple[str, str] | None
log = logging.getLogger("popgate.proofpool")


def _warm(vk_json: Any) -> None:
    """Worker initializer: prepare the key once per process."""
    prepared_key(vk_json)


def _ping() -> int:
    return 0


def start_executor(vk_json: Any, workers: int) -> ProcessPoolExecutor:
    """A ProcessPoolExecutor of ``workers`` processes, each with ``vk_json`` prepared.

    Uses the ``forkserver`` start method (no fork of a process with an event
    loop and threads). Workers are started now, not on first use."""
    ctx = multiprocessing.get_context("forkserver")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_warm, initargs=(vk_json,))
    for _ in range(workers):  # 3.11 spawns a worker per submit while none is idle
        pool.submit(_ping)
    return pool


async def stop_executor(executor: Executor, timeout: float = 5.0) -> None:
    """Stop a pool before the event loop ends: drop the jobs still waiting, let
    the processes take their exit sentinels, and terminate any that have not
    gone within ``timeout`` seconds.

    ``shutdown(wait=False)`` is not enough in a forked ``--workers`` process: it
    leaves via multiprocessing's exit handler, which joins the pool processes,
    but never runs the ``concurrent.futures`` hook that tells them to exit, so
    the worker waited on its pool for ever after SIGTERM."""
    processes = list((getattr(executor, "_processes", None) or {}).values())
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(
            loop.run_in_executor(None, functools.partial(executor.shutdown, wait=True, cancel_futures=True)),
            timeout,
        )
    except (TimeoutError, RuntimeError) as exc:
        log.warning(
            "verification pool did not stop in %.0fs (%s): terminating it", timeout, type(exc).__name__
        )
    for proc in processes:
        if proc.is_alive():
            proc.terminate()


def job_hash(vk_id: str, proof: Any, public: list[int]) -> str:
    """A stable hash of (key, proof, public inputs): the cache and coalescing key."""
    text = json.dumps([vk_id, proof, [str(x) for x in public]], separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ProofPool:
    """Verify Groth16 proofs in ``executor`` with a cache, coalescing and a depth bound."""

    def __init__(
        self,
        executor: Executor,
        vk_json: Any,
        *,
        workers: int,
        queue_limit: int,
        metrics: Metrics,
        scheme: str = "worldid",
        cache_size: int = 4096,
        restart: Callable[[], Executor] | None = None,
    ) -> None:
        self.executor, self.vk_json, self.restart = executor, vk_json, restart
        self.restarts = 0
        self.vk_id = hashlib.sha256(json.dumps(vk_json, sort_keys=True).encode()).hexdigest()
        self.workers, self.queue_limit = workers, queue_limit
        self.metrics, self.scheme = metrics, scheme
        self.cache: OrderedDict[str, Verdict] = OrderedDict()
        self.cache_size = cache_size
        self.inflight: dict[str, asyncio.Future[Verdict]] = {}
        self.pending = 0
        self.avg_seconds = 0.05
        self.stats = {"pooled": 0, "cached": 0, "coalesced": 0, "refused": 0}

    def cached(self, proof: Any, public: list[int]) -> Verdict | bool:
        """The cached verdict for this job, or False when not cached."""
        h = job_hash(self.vk_id, proof, public)
        if h in self.cache:
            self.cache.move_to_end(h)
            return self.cache[h]
        return False

    async def verify(self, proof: Any, public: list[int]) -> None:
        """Return for a valid proof; raise VerificationError (from the worker's
        verdict) or Overloaded when too many jobs are in flight."""
        raise_job_result(await self.verdict(proof, public))

    async def verdict(self, proof: Any, public: list[int]) -> Verdict:
        h = job_hash(self.vk_id, proof, public)
        if h in self.cache:
            self.cache.move_to_end(h)
            self.stats["cached"] += 1
            return self.cache[h]
        running = self.inflight.get(h)
        if running is not None:
            self.stats["coalesced"] += 1
            return await asyncio.shield(running)
        if self.pending >= self.workers + self.queue_limit:
            self.stats["refused"] += 1
            wait = self.pending / max(1, self.workers) * self.avg_seconds
            raise Overloaded("verification pool full", retry_after=max(1.0, math.ceil(wait)))
        fut: asyncio.Future[Verdict] = asyncio.get_running_loop().create_future()
        self.inflight[h] = fut
        try:
            verdict = await self._run(proof, public)
        except BaseException as exc:
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()  # retrieved: no "never retrieved" warning
            raise
        finally:
            self.inflight.pop(h, None)
        fut.set_result(verdict)
        self.cache[h] = verdict
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return verdict

    async def _run(self, proof: Any, public: list[int]) -> Verdict:
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        pub = [str(x) for x in public]
        executor = self.executor
        try:
            job = loop.run_in_executor(executor, verify_job, self.vk_json, proof, pub)
        except BrokenProcessPool:  # broken before this job: it never ran, submit it again
            self._replace(executor)
            executor = self.executor
            try:
                job = loop.run_in_executor(executor, verify_job, self.vk_json, proof, pub)
            except BrokenProcessPool:
                raise self._unavailable("verification pool broken") from None
        self.pending += 1  # until the job itself ends, even if the caller goes away
        self._gauge()

        def done(_: Any) -> None:
            self.pending -= 1
            self._gauge()

        job.add_done_callback(done)
        try:
            verdict = await asyncio.shield(job)
        except BrokenProcessPool:  # a worker died with this job in flight
            self._replace(executor)
            raise self._unavailable("verification worker died") from None
        took = time.perf_counter() - started
        self.avg_seconds = 0.9 * self.avg_seconds + 0.1 * took
        self.metrics.verify_seconds.labels(self.scheme).observe(took)
        self.stats["pooled"] += 1
        return verdict

    def _replace(self, broken: Executor) -> None:
        """Swap a broken executor for a new one (once, however many jobs saw it break)."""
        if self.restart is None or self.executor is not broken:
            return
        self.executor = self.restart()
        self.restarts += 1
        log.warning(
            "%s verification pool broken (a worker died): replaced (%d so far)", self.scheme, self.restarts
        )
        broken.shutdown(wait=False, cancel_futures=True)

    @staticmethod
    def _unavailable(detail: str) -> Overloaded:
        return Overloaded(detail, retry_after=1.0, reason="verifier_unavailable")

    def _gauge(self) -> None:
        self.metrics.pool_queue.set(max(0, self.pending - self.workers))


def service_pool(
    services: Any, vk_json: Any, *, workers: int, queue_limit: int, scheme: str, cache_size: int = 4096
) -> ProofPool:
    """A ProofPool for an extension: on ``services.executor`` when the gateway
    was given one (tests share one), else on processes of its own, replaced if
    one dies and stopped with the gateway (:func:`stop_executor`)."""
    if services.executor is not None:
        return ProofPool(
            services.executor,
            vk_json,
            workers=workers,
            queue_limit=queue_limit,
            metrics=services.metrics,
            scheme=scheme,
            cache_size=cache_size,
        )
    started = time.perf_counter()

    def new_executor() -> ProcessPoolExecutor:
        return start_executor(vk_json, workers)

    pool = ProofPool(
        new_executor(),
        vk_json,
        workers=workers,
        queue_limit=queue_limit,
        metrics=services.metrics,
        scheme=scheme,
        cache_size=cache_size,
        restart=new_executor,
    )

    async def shutdown() -> None:
        await stop_executor(pool.executor)  # the current one

    services.cleanups.append(shutdown)
    log.info("%s: %d verification worker(s) starting (%.2fs)", scheme, workers, time.perf_counter() - started)
    return pool
