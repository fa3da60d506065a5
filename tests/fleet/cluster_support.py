"""A real multi-master Redis Cluster on loopback, for tests.

:func:`start_cluster` starts ``n`` ``redis-server --cluster-enabled yes`` processes
on free loopback ports (each with its own cluster-bus port: the default port + 10000
is past 65535 for high ports), joins them with ``redis-cli --cluster create
... --cluster-replicas 0`` and waits until every node reports ``cluster_state:ok``.
:func:`stop_cluster` ends exactly the processes it started, by pid.

``shared_cluster()`` / ``release_shared_cluster()`` hand one 3-master cluster to every
session fixture that asks (tests/fleet and tests/stores both do): the first caller
starts it, the last release stops it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.servers import free_port, wait_port


@dataclass
class Cluster:
    """A running cluster: its node ports, processes and the popgate store URL."""

    ports: list[int]
    procs: list[subprocess.Popen[bytes]]
    workdir: Path
    users: int = field(default=0)
    bus_ports: list[int] = field(default_factory=list)

    def _spawn(self, port: int, bus: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [
                _binary("redis-server"),
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.workdir / f"nodes-{port}.conf"),
                "--cluster-port",
                str(bus),
                "--cluster-node-timeout",
                "2000",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self, i: int) -> None:
        """Kill master ``i`` (our process, by pid): its slots go unserved."""
        self.procs[i].kill()
        self.procs[i].wait(10)

    def restart(self, i: int, timeout: float = 20.0) -> None:
        """Restart master ``i`` on its port with its nodes.conf (same id and slots) and
        wait for cluster_state:ok everywhere."""
        self.procs[i] = self._spawn(self.ports[i], self.bus_ports[i])
        wait_port(self.ports[i], proc=self.procs[i])
        self.wait_ok(timeout)

    def wait_ok(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not all(_cluster_ok(p) for p in self.ports):
            if time.monotonic() > deadline:
                raise RuntimeError(f"cluster on {self.ports} did not reach cluster_state:ok")
            time.sleep(0.05)

    @property
    def url(self) -> str:
        """``redis+cluster://127.0.0.1:P1,127.0.0.1:P2,.../`` (every node a startup node)."""
        return "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in self.ports) + "/"

    def node_for_slot(self, slot: int) -> int:
        """The port of the master owning ``slot`` (from CLUSTER SLOTS on the first node)."""
        import redis

        c = redis.Redis(port=self.ports[0])
        try:
            for start, end, master, *_ in c.execute_command("CLUSTER SLOTS"):
                if start <= slot <= end:
                    return int(master[1])
        finally:
            c.close()
        raise LookupError(f"slot {slot} not covered")


def _cluster_ok(port: int) -> bool:
    import redis

    c = redis.Redis(port=port, socket_timeout=1)
    try:
        info = c.execute_command("CLUSTER", "INFO")
        return b"cluster_state:ok" in info
    except redis.RedisError:
        return False
    finally:
        c.close()


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: `make test` installs redis-server and redis-cli")
    return path


def start_cluster(masters: int = 3, timeout: float = 20.0) -> Cluster:
    """Start a ``masters``-node cluster (no replicas), every slot assigned, state ok."""
    cli = _binary("redis-cli")
    cluster = Cluster([], [], Path(tempfile.mkdtemp(prefix="pg-redis-cluster-")))
    try:
        for _ in range(masters):
            port = free_port()
            bus = free_port()
            while bus == port or bus in cluster.ports or bus in cluster.bus_ports:
                bus = free_port()
            cluster.procs.append(cluster._spawn(port, bus))
            cluster.ports.append(port)
            cluster.bus_ports.append(bus)
        for port, proc in zip(cluster.ports, cluster.procs):
            wait_port(port, proc=proc)
        created = subprocess.run(
            [
                cli,
                "--cluster",
                "create",
                *(f"127.0.0.1:{p}" for p in cluster.ports),
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            capture_output=True,
            timeout=timeout,
        )
        if created.returncode != 0:
            raise RuntimeError(
                "redis-cli --cluster create failed:\n"
                + created.stdout.decode(errors="replace")[-2000:]
                + created.stderr.decode(errors="replace")[-2000:]
            )
        cluster.wait_ok(timeout)
        return cluster
    except BaseException:
        stop_cluster(cluster)
        raise


def stop_cluster(cluster: Cluster) -> None:
    """End the cluster's processes (ours, by pid) and remove its directory."""
    for proc in cluster.procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in cluster.procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    shutil.rmtree(cluster.workdir, ignore_errors=True)


_shared: Cluster | None = None


def shared_cluster() -> Cluster:
    """The session's 3-master cluster, started on first use; pair with a release."""
    global _shared
    if _shared is None:
        _shared = start_cluster(3)
    _shared.users += 1
    return _shared


def release_shared_cluster() -> None:
    global _shared
    if _shared is None:
        return
    _shared.users -= 1
    if _shared.users <= 0:
        stop_cluster(_shared)
        _shared = None


@pytest.fixture(scope="session")
def redis_cluster3() -> Iterator[Cluster]:
    """The session's real 3-master Redis Cluster (``.url`` is the popgate store URL)."""
    cluster = shared_cluster()
    try:
        yield cluster
    finally:
        release_shared_cluster()


async def flush_cluster(url: str) -> None:
    """FLUSHDB on every master of the cluster behind a ``redis+cluster://`` URL."""
    from popgate.gateway.stores.redis import RedisStore

    store = RedisStore(url)
    try:
        await store.client.flushdb(target_nodes=store.client.PRIMARIES)
    finally:
        await store.close()
