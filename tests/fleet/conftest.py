"""A fleet of real popgate processes on one real Redis.

``fleet(n, extra=..., policy=...)`` starts ``n`` ``popgate run`` processes
(tests.support.servers.gateway_process) that share one config — same session
and puzzle keys, same policy, ``[store] url`` = the session's redis-server —
and differ only in their ports. Later features slot in by passing their
config tables in ``extra`` (and key files through ``fleet.secret(name)``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from popgate.gateway.ops.config import Config, load_config
from popgate.verifiers.session import SessionCodec
from tests.fleet.cluster_support import flush_cluster, redis_cluster3  # noqa: F401 (fixture)
from tests.support.servers import free_port, gateway_process, wait_port, wait_port_async, write_config


@dataclass
class Fleet:
    """Running gateways sharing one store; index them like a list."""

    configs: list[Config]
    procs: list[subprocess.Popen[bytes]]
    paths: list[Path]
    tmp: Path
    http: aiohttp.ClientSession
    extra_files: dict[str, Path] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.configs)

    def url(self, i: int, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.configs[i % len(self)].listen.port}{path}"

    def admin(self, i: int, path: str) -> str:
        return f"http://127.0.0.1:{self.configs[i % len(self)].admin.port}{path}"

    def codec(self, i: int = 0) -> SessionCodec:
        """The session codec instance ``i`` signs with (for minting test sessions)."""
        s = self.configs[i].sessions
        return SessionCodec(s.keys, s.signing_kid)

    async def get(self, i: int, path: str = "/", **kw: object) -> tuple[int, bytes]:
        async with self.http.get(self.url(i, path), **kw) as r:  # type: ignore[arg-type]
            return r.status, await r.read()

    async def post(self, i: int, path: str, **kw: object) -> tuple[int, bytes]:
        async with self.http.post(self.url(i, path), **kw) as r:  # type: ignore[arg-type]
            return r.status, await r.read()


FleetFactory = Callable[..., Awaitable[Fleet]]
FLEET_DB = 7  # a database of its own on the session's redis-server: flushed per fleet


def _secret(tmp: Path, name: str) -> Path:
    path = tmp / name
    if not path.exists():
        path.write_bytes(os.urandom(24).hex().encode())
    return path


@pytest.fixture
async def fleet(redis_url: str, upstream: str, tmp_path: Path) -> AsyncIterator[FleetFactory]:
    """Factory: ``await fleet(3, extra="[puzzle]...", policy="...toml...")``.

    ``store_url`` replaces the session's Redis (e.g. a Redis Cluster node).

    Each call flushes its Redis database (``FLEET_DB``) first, so tests do not see each
    other's spends. ``extra`` may name shared secrets as ``{secret:NAME}``
    (a file created once per test, the same for every instance).
    """
    started: list[subprocess.Popen[bytes]] = []
    store = re.sub(r"/\d+$", "", redis_url) + f"/{FLEET_DB}"
    sessions: list[aiohttp.ClientSession] = []

    async def start(
        n: int = 3,
        *,
        extra: str = "",
        policy: str | None = None,
        per_instance: Callable[[int, str], str] | None = None,
        store_url: str | None = None,
    ) -> Fleet:
        import redis.asyncio as aioredis

        url = store_url or store
        if url.startswith("redis+cluster://"):
            await flush_cluster(url)
        else:
            r = aioredis.from_url(url)
            await r.flushdb()
            await r.aclose()
        extra = re.sub(r"\{secret:([\w.-]+)\}", lambda m: str(_secret(tmp_path, m.group(1))), extra)
        if policy is not None:
            (tmp_path / "policy.toml").write_text(policy)
            extra += f'\n[policy]\nfile = "{tmp_path / "policy.toml"}"\n'
        # no table of its own: a [puzzle] so the default challenge has a way out (popgate run needs one)
        base = write_config(tmp_path, upstream, store=url, extra=extra, way_in=not extra).read_text()
        configs, procs, paths = [], [], []
        for i in range(n):
            text = re.sub(r"^listen = .*$", f'listen = "127.0.0.1:{free_port()}"', base, flags=re.M)
            text = re.sub(r"^admin = .*$", f'admin = "127.0.0.1:{free_port()}"', text, flags=re.M)
            if per_instance is not None:
                text = per_instance(i, text)
            path = tmp_path / f"gateway-{i}.toml"
            path.write_text(text)
            configs.append(load_config(path))
            paths.append(path)
            proc = gateway_process(path)
            started.append(proc)
            procs.append(proc)
        for c, p in zip(configs, procs):
            try:
                await wait_port_async(c.listen.port, 20)
                await wait_port_async(c.admin.port, 20)
            except RuntimeError:
                p.kill()
                out = p.communicate(timeout=5)[0].decode(errors="replace")
                raise RuntimeError(f"gateway did not start:\n{out[-3000:]}") from None
        http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        sessions.append(http)
        return Fleet(configs, procs, paths, tmp_path, http)

    yield start
    for s in sessions:
        await s.close()
    for p in started:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in started:
        try:
            await asyncio.to_thread(p.wait, 15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real one-node Redis Cluster (all 16384 slots on one node): cluster semantics
    (CROSSSLOT on multi-key commands and scripts) without a six-node setup."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: `make test` installs it")
    port = free_port()
    work = tmp_path_factory.mktemp("redis-cluster")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(work),
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(work / "nodes.conf"),
            # the bus port defaults to port + 10000: past 65535 for high ports
            "--cluster-port",
            str(free_port()),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc=proc)
        import redis

        client = redis.Redis(port=port)
        client.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
        deadline = time.monotonic() + 15
        while b"cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
            if time.monotonic() > deadline:
                raise RuntimeError("one-node cluster did not reach cluster_state:ok")
            time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)
