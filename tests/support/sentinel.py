"""A real Redis master, replicas and ``redis-sentinel`` processes, for tests.

:class:`SentinelSet` starts them on free loopback ports (or the data nodes inside a
network namespace, through ``prefix``), each process ended by the pid we started.
Data nodes run with what a Sentinel deployment of popgate should run
(deploy/OPERATIONS.md):

- ``appendonly yes`` + ``appendfsync always``: a node killed and restarted keeps
  every write it acknowledged (never comes back empty and wipes its replicas);
- ``min-replicas-to-write 1`` / ``min-replicas-max-lag 2``: a master cut off from
  every replica stops taking writes within 2 s (bounds what a partitioned old
  master can accept and later lose);
- the store itself waits for one replica per write (``WAIT 1``, ``replica_acks``):
  what it acknowledges is on a replica, and Sentinel promotes the most up-to-date one.

Sentinels: quorum ``len(sentinels) // 2 + 1``, ``down-after-milliseconds`` 1000,
``failover-timeout`` 4000 (timings chosen for tests; production values in OPERATIONS.md).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

from tests.support.servers import free_port, wait_port

NAME = "popgate"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: `make system-deps` installs it (apt-get install {name})")
    return path


@dataclass
class Node:
    host: str
    port: int
    args: list[str]
    prefix: list[str]
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [*self.prefix, *self.args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def kill(self) -> None:
        """SIGKILL (a crash), by the pid we started."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def client(self, timeout: float = 1.0) -> redis.Redis:
        return redis.Redis(self.host, self.port, socket_timeout=timeout, socket_connect_timeout=timeout)


class SentinelSet:
    """One master, ``replicas`` replicas and ``sentinels`` Sentinels."""

    def __init__(
        self,
        replicas: int = 2,
        sentinels: int = 3,
        *,
        host: str = "127.0.0.1",
        prefix: list[str] | None = None,
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="pg-sentinel-"))
        self.host, self.prefix = host, prefix or []
        self.data: list[Node] = []
        self.sentinels: list[Node] = []
        for i in range(replicas + 1):
            port = free_port()
            d = self.dir / f"data-{i}"
            d.mkdir()
            args = [binary("redis-server"), "--port", str(port), "--bind", host, "--dir", str(d)]
            args += ["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"]
            args += ["--min-replicas-to-write", "1", "--min-replicas-max-lag", "2"]
            if i > 0:
                args += ["--replicaof", host, str(self.data[0].port)]
            self.data.append(Node(host, port, args, self.prefix))
        quorum = sentinels // 2 + 1
        for i in range(sentinels):
            port = free_port()
            conf = self.dir / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.dir}\n"
                f"sentinel monitor {NAME} {host} {self.data[0].port} {quorum}\n"
                f"sentinel down-after-milliseconds {NAME} 1000\n"
                f"sentinel failover-timeout {NAME} 4000\n"
                f"sentinel parallel-syncs {NAME} 2\n"
            )
            self.sentinels.append(Node("127.0.0.1", port, [binary("redis-sentinel"), str(conf)], []))

    def url(self, db: int = 0) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{NAME}/{db}"

    def start(self, timeout: float = 20.0) -> None:
        for n in self.data:
            n.start()
        for n in self.data:
            self._wait_ping(n, timeout)
        for s in self.sentinels:
            s.start()
            wait_port(s.port, proc=s.proc)
        self.wait_replicas(self.data[0].port, len(self.data) - 1, timeout)
        self.wait_sentinels_agree(self.data[0].port, timeout)

    def _wait_ping(self, n: Node, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                n.client(0.3).ping()
                return
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def node(self, port: int) -> Node:
        return next(n for n in self.data if n.port == port)

    def master_port(self) -> int | None:
        """The master's port as the Sentinels' majority sees it (None: no majority)."""
        seen: dict[int, int] = {}
        for s in self.sentinels:
            try:
                addr = s.client(0.3).execute_command("SENTINEL", "get-master-addr-by-name", NAME)
            except redis.RedisError:
                continue
            if addr:
                seen[int(addr[1])] = seen.get(int(addr[1]), 0) + 1
        best = max(seen.items(), key=lambda kv: kv[1], default=None)
        return best[0] if best and best[1] > len(self.sentinels) // 2 else None

    def wait_sentinels_agree(self, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.master_port() != port:
            if time.monotonic() > deadline:
                raise RuntimeError(f"Sentinels do not agree on master :{port}")
            time.sleep(0.05)

    def wait_promotion(self, old: int, timeout: float = 20.0) -> int:
        """Wait until the Sentinels name a master other than ``old`` and it says
        role:master; return its port."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.master_port()
            if port is not None and port != old:
                with contextlib.suppress(redis.RedisError):
                    if self.node(port).client(0.3).info("replication")["role"] == "master":
                        return port
            time.sleep(0.05)
        raise RuntimeError(f"no replica promoted within {timeout}s after :{old} went down")

    def wait_replicas(self, master: int, n: int, timeout: float = 30.0) -> None:
        """Wait until ``master`` has ``n`` replicas online (streaming)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(redis.RedisError):
                info = self.node(master).client(0.3).info("replication")
                online = [v for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)]
                if sum(1 for v in online if v.get("state") == "online") >= n:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"master :{master} has not {n} online replicas after {timeout}s")

    def point_replicas_at(self, master: int) -> None:
        """``REPLICAOF`` every other data node to ``master``, as an operator would when
        Sentinel is slow to demote a restarted old master (it is on a loaded machine)."""
        for n in self.data:
            if n.port != master:
                with contextlib.suppress(redis.RedisError):
                    n.client(1.0).replicaof("127.0.0.1", master)

    def stop(self) -> None:
        for n in (*self.sentinels, *self.data):
            n.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def sentinel_set(replicas: int = 2, sentinels: int = 3) -> Iterator[SentinelSet]:
    s = SentinelSet(replicas, sentinels)
    try:
        s.start()
        yield s
    finally:
        s.stop()
