"""Real servers for tests, all on loopback: redis-server, the demo upstream,
a gateway in-process or as a subprocess. Each is ended by the pid we started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]


# Listening ports come from below the kernel's ephemeral range (32768-60999 here), so an
# outgoing connection (thousands in a run) cannot take one between free_port() and bind.
_PORTS = random.Random()
_LOW, _HIGH = 20000, 32000


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range."""
    for _ in range(200):
        port = _PORTS.randrange(_LOW, _HIGH)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as s:  # the low range is crowded: any free port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0, proc: subprocess.Popen[Any] | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def redis_server() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A throwaway redis-server on a free loopback port; yields (url, process)."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found: `make test` installs it (apt-get install redis-server)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="pg-redis-")
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
            workdir,
            "--protected-mode",
            "yes",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc=proc)
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.asynccontextmanager
async def serve_app(app: web.Application, port: int | None = None) -> AsyncIterator[int]:
    """Run an aiohttp app on loopback; yields its port."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port or 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


def write_config(
    tmp: Path,
    upstream: str,
    *,
    store: str = "memory://",
    extra: str = "",
    server_extra: str = "",
    listen: int | None = None,
    admin: int | None = None,
    way_in: bool = False,
) -> Path:
    """A complete popgate.toml with two session keys (k1 signs, k0 still accepted).

    ``way_in``: add a ``[puzzle]`` table, so the default challenge offers a way out
    (``popgate run`` refuses a challenge with none: gateway/ops/deadends.py)."""
    (tmp / "k0").write_bytes(b"0" * 40)
    if way_in:
        (tmp / "p1").write_bytes(os.urandom(24).hex().encode())
        extra = f'[puzzle]\nkeys = [{{kid = "p1", secret_file = "{tmp / "p1"}"}}]\n' + extra
    (tmp / "k1").write_bytes(os.urandom(24).hex().encode())
    path = tmp / "popgate.toml"
    path.write_text(f"""
[server]
listen = "127.0.0.1:{listen or free_port()}"
admin = "127.0.0.1:{admin or free_port()}"
upstream = "{upstream}"
shutdown_timeout = 5
{server_extra}
[store]
url = "{store}"
[sessions]
signing_kid = "k1"
keys = [{{kid = "k1", secret_file = "{tmp / "k1"}"}}, {{kid = "k0", secret_file = "{tmp / "k0"}"}}]
{extra}
""")
    return path


def gateway_process(config: Path, *args: str) -> subprocess.Popen[bytes]:
    """``popgate run --config`` as a subprocess (for signals and multi-process tests)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "popgate.gateway",
            "run",
            "--config",
            str(config),
            "--log-level",
            "WARNING",
            *args,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def wait_port_async(port: int, timeout: float = 15.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            _, w = await asyncio.open_connection("127.0.0.1", port)
            w.close()
            return
        except OSError:
            await asyncio.sleep(0.02)
    raise RuntimeError(f"nothing listening on {port}")
