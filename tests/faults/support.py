"""Fault-injection helpers, all on loopback: a Redis that can be killed and
restarted with its data (AOF, fsync always), a TCP proxy that delays bytes,
an origin that misbehaves, and a metrics reader."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator

from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import free_port, wait_port


class DurableRedis:
    """redis-server with AOF (appendfsync always) on a fixed port and dir:
    ``kill()`` is SIGKILL (a crash), ``start()`` brings it back with its data."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="pg-faults-redis-")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server not installed"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--dir",
                self.dir,
                "--protected-mode",
                "yes",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_port(self.port, proc=self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


@contextlib.contextmanager
def durable_redis() -> Iterator[DurableRedis]:
    r = DurableRedis()
    r.start()
    try:
        yield r
    finally:
        r.stop()


@contextlib.asynccontextmanager
async def delaying_proxy(target_port: int) -> AsyncIterator[dict[str, float]]:
    """A TCP proxy on loopback in front of ``target_port``; every chunk in
    either direction waits ``control["delay"]`` seconds (0 = transparent).
    Yields the control dict, with ``control["port"]`` the proxy's port."""
    control: dict[str, float] = {"delay": 0.0}
    tasks: set[asyncio.Task[None]] = set()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                if control["delay"]:
                    await asyncio.sleep(control["delay"])
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            cw.close()
            return
        for t in (pump(cr, uw), pump(ur, cw)):
            task = asyncio.create_task(t)
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    control["port"] = server.sockets[0].getsockname()[1]
    try:
        yield control
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def sample(registry: object, name: str, labels: dict[str, str] | None = None) -> float:
    """A sample of an in-process gateway's metrics (0 when absent)."""
    value = registry.get_sample_value(name, labels or {})  # type: ignore[attr-defined]
    return float(value or 0.0)


def samples_from_text(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """All samples named ``name`` in a /metrics exposition, by sorted labels."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out
