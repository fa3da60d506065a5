"""World ID's Groth16 process pool loses a worker (SIGKILL: the OOM killer, a
crash in native code): the client with a proof in flight gets a clear 503
``verifier_unavailable`` + Retry-After (never a 500, never a hang), the pool
is replaced, and the next exchange works. Real gateway, real forkserver pool,
real fixture proofs."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from tests.conftest import url_of
from tests.faults.support import sample
from tests.gateway.schemes.worldid_support import ENDPOINT, body, worldid_toml


def descendants(pid: int) -> set[int]:
    """Every live descendant of ``pid``, from /proc/<pid>/task/<tid>/children."""
    out: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for k in map(int, kids):
                if k not in out:
                    out.add(k)
                    todo.append(k)
    return out


def pool_workers(pool) -> set[int]:
    """The pool's worker pids, checked against the process tree in /proc."""
    pids = set(pool.executor._processes)
    tree = descendants(os.getpid())
    assert pids and pids <= tree, (pids, tree)
    return pids


async def post(http, gw, payload, timeout=10.0):
    t0 = time.monotonic()
    async with asyncio.timeout(timeout):
        async with http.post(url_of(gw, ENDPOINT), json=payload) as r:
            data = await r.json(content_type=None)
            return r.status, data.get("reason"), r.headers.get("Retry-After"), time.monotonic() - t0


async def wait_for(cond, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


async def test_worker_killed_mid_verification_is_503_then_pool_is_replaced(upstream, gateway_factory, http):
    """Two workers, both stopped (SIGSTOP) so a proof is surely in flight; one
    is SIGKILLed: the in-flight exchange gets 503 verifier_unavailable with
    Retry-After within a second or so, the broken pool is replaced by a fresh
    one (new pids, the old ones gone), the same proof then buys a session (a
    refused exchange spent nothing) and so does another; the failure is
    counted in ``popgate_evidence_total{scheme="worldid",result="verifier_unavailable"}``."""
    gw = await gateway_factory(upstream, extra=worldid_toml(workers=2))
    pool = gw.gateway.endpoints[ENDPOINT].pool
    wrong = {"result": body(0)["result"], "signal": "not what was proved"}
    assert (await post(http, gw, wrong))[:2] == (401, "invalid_proof")  # the pool works
    old = pool_workers(pool)
    assert len(old) == 2
    for pid in old:
        os.kill(pid, signal.SIGSTOP)
    victim = min(old)
    try:
        task = asyncio.create_task(post(http, gw, body(1)))
        await wait_for(lambda: pool.pending >= 1)  # the job is with the (stopped) workers
        await asyncio.sleep(0.2)
        os.kill(victim, signal.SIGKILL)
    finally:
        for pid in old - {victim}:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
    status, reason, retry_after, took = await task
    assert (status, reason) == (503, "verifier_unavailable"), (status, reason)
    assert retry_after is not None and int(retry_after) >= 1
    assert took < 3.0
    await wait_for(lambda: not any(alive(p) for p in old))
    assert (await post(http, gw, body(1)))[0] == 200, "the refused proof spent nothing"
    new = pool_workers(pool)
    assert new and not new & old
    assert (await post(http, gw, body(0)))[0] == 200
    reg = gw.gateway.metrics.registry
    assert sample(reg, "popgate_evidence_total", {"scheme": "worldid", "result": "verifier_unavailable"}) == 1
    assert pool.restarts == 1


async def test_idle_worker_killed_costs_no_client_a_failure(upstream, gateway_factory, http):
    """A worker dies while nothing is in flight (the executor notices and marks
    itself broken): the next exchange finds the broken pool at submit time,
    replaces it and is verified on the new one, so no client sees an error."""
    gw = await gateway_factory(upstream, extra=worldid_toml(workers=1))
    pool = gw.gateway.endpoints[ENDPOINT].pool
    old = pool_workers(pool)
    broken = pool.executor
    os.kill(next(iter(old)), signal.SIGKILL)
    await wait_for(lambda: broken._broken)
    status, reason, _, took = await post(http, gw, body(0))
    assert status == 200, reason
    assert took < 3.0
    assert pool.restarts == 1 and not pool_workers(pool) & old
    # A burst of exchanges (distinct jobs) all answered by the new pool.
    results = await asyncio.gather(
        *(post(http, gw, {"result": body(0)["result"], "signal": f"s{i}"}) for i in range(6))
    )
    assert {(s, r) for s, r, *_ in results} == {(401, "invalid_proof")}
