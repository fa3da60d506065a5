"""``popgate run --workers N``: one port, N processes, one set of numbers."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest

from popgate.gateway.ops.config import load_config
from popgate.gateway.ops.metrics_files import FLUSH_SECONDS
from popgate.gateway.ops.workers import worker_pids
from tests.gateway.schemes.worldid_support import ENDPOINT, body, worldid_toml
from tests.support.servers import gateway_process, wait_port_async, write_config

WORKERS = 2
POLICY = """version = 1
[default]
human = "allow"
account = "allow"
verified-agent = "allow"
agent = "{unknown}"
unknown = "{unknown}"
"""


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:{{(.*)}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total


async def wait_workers(
    parent: int, n: int, exclude: set[int] = frozenset(), timeout: float = 15
) -> list[int]:  # type: ignore[assignment]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = worker_pids(parent)
        if len(pids) == n and not set(pids) & exclude:
            return pids
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {n} workers of {parent}, have {worker_pids(parent)}")


async def hammer(port: int, path: str, n: int, headers: dict[str, str] | None = None) -> list[int]:
    """``n`` requests, each on a new connection (so SO_REUSEPORT spreads them)."""
    statuses = []
    for _ in range(n):
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            async with s.get(f"http://127.0.0.1:{port}{path}", headers=headers or {}) as r:
                await r.read()
                statuses.append(r.status)
    return statuses


async def scrape(port: int) -> str:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
        async with s.get(f"http://127.0.0.1:{port}/metrics") as r:
            assert r.status == 200
            return await r.text()


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The operator-chosen metrics directory the workers share (so the test can look in)."""
    d = tmp_path / "metrics"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(d))
    return d


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(20)


async def test_workers_share_both_ports_and_aggregate_metrics(upstream, tmp_path, multiproc_dir):
    """Two workers answer on one proxy and one admin port; every /metrics scrape, whichever
    worker answers it, reports the requests of all workers."""
    path = write_config(tmp_path, upstream, store=f"sqlite:///{tmp_path}/store.db", way_in=True)
    cfg = load_config(path)
    proc = gateway_process(path, "--workers", str(WORKERS))
    try:
        await wait_port_async(cfg.listen.port)
        await wait_port_async(cfg.admin.port)
        pids = await wait_workers(proc.pid, WORKERS)
        # A worker process exists a moment before its socket is bound, so keep sending (on new
        # connections) until every worker has counted some; the totals must then add up exactly.
        sent, writers = 0, set()
        deadline = time.monotonic() + 15
        while writers != set(pids) and time.monotonic() < deadline:
            statuses = await hammer(cfg.listen.port, "/", 20)
            assert statuses == [402] * 20
            sent += 20
            writers = {int(f.stem.rsplit("_", 1)[1]) for f in multiproc_dir.glob("counter_*.db")}
        assert writers == set(pids), "both workers should have served (and counted) requests"
        # Workers write their numbers every FLUSH_SECONDS (and the answering one at once).
        await asyncio.sleep(3 * FLUSH_SECONDS)
        scrapes = [await scrape(cfg.admin.port) for _ in range(8)]
        for text in scrapes:
            assert metric(text, "popgate_requests_total", decision="challenge") == sent
            assert "pid=" not in text, "per-worker gauges are merged"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"http://127.0.0.1:{cfg.admin.port}/healthz") as r:
                assert r.status == 200
            async with s.get(f"http://127.0.0.1:{cfg.admin.port}/status.json") as r:
                assert (await r.json())["requests_total"] == sent
    finally:
        assert stop(proc) == 0


async def test_dead_worker_is_replaced_and_counters_survive(upstream, tmp_path, multiproc_dir):
    """A worker killed with SIGKILL is replaced; its counted requests stay in the totals."""
    path = write_config(tmp_path, upstream, store=f"sqlite:///{tmp_path}/store.db", way_in=True)
    cfg = load_config(path)
    proc = gateway_process(path, "--workers", str(WORKERS))
    try:
        await wait_port_async(cfg.listen.port)
        pids = await wait_workers(proc.pid, WORKERS)
        await hammer(cfg.listen.port, "/", 20)
        await asyncio.sleep(3 * FLUSH_SECONDS)  # a SIGKILL loses at most the last flush period
        os.kill(pids[0], signal.SIGKILL)
        new = await wait_workers(proc.pid, WORKERS, exclude={pids[0]})
        assert pids[1] in new
        assert not list(multiproc_dir.glob(f"gauge_*_{pids[0]}.db")), "dead worker's gauges dropped"
        await asyncio.sleep(0.3)
        assert await hammer(cfg.listen.port, "/", 20) == [402] * 20
        await asyncio.sleep(3 * FLUSH_SECONDS)
        text = await scrape(cfg.admin.port)
        assert metric(text, "popgate_requests_total") == 40
    finally:
        assert stop(proc) == 0


async def test_sighup_reloads_every_worker(upstream, tmp_path):
    """SIGHUP to the parent reaches each worker: all of them switch to the edited policy."""
    policy = tmp_path / "policy.toml"
    policy.write_text(POLICY.format(unknown="deny"))
    path = write_config(
        tmp_path, upstream, store=f"sqlite:///{tmp_path}/store.db", extra=f'[policy]\nfile = "{policy}"\n'
    )
    cfg = load_config(path)
    proc = gateway_process(path, "--workers", str(WORKERS))
    try:
        await wait_port_async(cfg.listen.port)
        await wait_workers(proc.pid, WORKERS)
        assert set(await hammer(cfg.listen.port, "/", 12)) == {403}
        policy.write_text(POLICY.format(unknown="allow"))
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if set(await hammer(cfg.listen.port, "/", 4)) == {200}:
                break
            await asyncio.sleep(0.1)
        assert set(await hammer(cfg.listen.port, "/", 30)) == {200}, "every worker reloaded"
    finally:
        assert stop(proc) == 0


async def test_sigterm_drains_every_worker(upstream, tmp_path):
    """SIGTERM: in-flight requests on the workers complete, then the parent exits 0 and no
    worker is left behind."""
    path = write_config(
        tmp_path, upstream, store=f"sqlite:///{tmp_path}/store.db", extra='[policy]\ndefault = "allow"\n'
    )
    cfg = load_config(path)
    proc = gateway_process(path, "--workers", str(WORKERS))
    await wait_port_async(cfg.listen.port)
    pids = await wait_workers(proc.pid, WORKERS)

    async def slow() -> int:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
            async with s.get(f"http://127.0.0.1:{cfg.listen.port}/slow?delay=1.0") as r:
                await r.read()
                return r.status

    tasks = [asyncio.create_task(slow()) for _ in range(6)]
    await asyncio.sleep(0.4)
    proc.send_signal(signal.SIGTERM)
    assert await asyncio.gather(*tasks) == [200] * 6
    assert await asyncio.to_thread(proc.wait, 20) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_memory_store_is_refused_with_workers(upstream_url_stub, tmp_path):
    """``memory://`` cannot be shared by workers: a clear error, exit 2."""
    path = write_config(tmp_path, upstream_url_stub, way_in=True)
    proc = gateway_process(path, "--workers", "2")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert b"needs a shared store" in out


@pytest.fixture
def upstream_url_stub() -> str:
    return "http://127.0.0.1:9"


async def test_sqlite_store_spends_once_across_workers(upstream, tmp_path):
    """Workers on one host share the embedded SQLite store: one puzzle solution raced over
    many connections (so over both workers) buys exactly one session."""
    import json

    from popgate.verifiers import puzzle
    from tests.gateway.schemes.puzzle_support import puzzle_extra, way

    path = write_config(
        tmp_path, upstream, store=f"sqlite:///{tmp_path}/store.db", extra=puzzle_extra(tmp_path)
    )
    cfg = load_config(path)
    proc = gateway_process(path, "--workers", str(WORKERS))
    try:
        await wait_port_async(cfg.listen.port)
        await wait_workers(proc.pid, WORKERS)
        base = f"http://127.0.0.1:{cfg.listen.port}"
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/v1/x", headers={"Accept": "application/json"}) as r:
                p = way(json.loads(await r.read()), "puzzle")
        nonces, _ = await asyncio.to_thread(puzzle.solve, p["challenge"], p["bits"], p["subs"])
        solution = f"{p['challenge']}:{','.join(nonces)}"

        async def submit() -> int:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as s:
                async with s.post(f"{base}/.well-known/popgate/puzzle", json={"solution": solution}) as r:
                    await r.read()
                    return r.status

        statuses = await asyncio.gather(*(submit() for _ in range(16)))
        assert sorted(statuses) == [200] + [403] * 15, statuses
    finally:
        assert stop(proc) == 0


def descendants(pid: int) -> set[int]:
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        out.update(kids)
        todo.extend(kids)
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[1].split()[0] != "Z"
    except OSError:
        return False


async def test_sigterm_stops_workers_and_their_proof_pools(upstream, tmp_path):
    """SIGTERM with World ID on: every worker, and the Groth16 pool each worker runs, exits.
    (Before: a forked worker left through multiprocessing's exit handler, which joined the
    pool processes nobody had told to stop: the parent waited for ever.)"""
    path = write_config(tmp_path, upstream, store=f"sqlite:///{tmp_path}/store.db", extra=worldid_toml())
    cfg = load_config(path)
    for round_ in range(2):
        proc = gateway_process(path, "--workers", "2")
        try:
            await wait_port_async(cfg.listen.port, timeout=30)
            deadline = time.monotonic() + 15
            while len(worker_pids(proc.pid)) < 2 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            async with aiohttp.ClientSession() as s:
                for _i in range(4):  # use the pools (each worker its own)
                    async with s.post(f"http://127.0.0.1:{cfg.listen.port}{ENDPOINT}", json=body(0)) as r:
                        await r.read()
            everyone = descendants(proc.pid)
            assert len(everyone) >= 4, everyone  # 2 workers, each a forkserver and a pool process
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        deadline = time.monotonic() + 5
        while any(alive(p) for p in everyone) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        left = [p for p in everyone if alive(p)]
        for p in left:
            os.kill(p, signal.SIGKILL)
        assert not left, f"round {round_}: processes left behind: {left}"
