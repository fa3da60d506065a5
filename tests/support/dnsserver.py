"""A real DNS server for tests: Debian's dnsmasq on a loopback UDP port, serving the PTR
and address records a test gives it and nothing else (every other name under the test's
zones is NXDOMAIN). Stopped by the pid we started."""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence

from tests.support.servers import free_port


def _dnsmasq() -> str:
    path = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if path is None:
        raise RuntimeError("dnsmasq is not installed: apt-get install dnsmasq-base (make system-deps does)")
    return path


def _wait_udp(port: int, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Until dnsmasq answers a query on ``port`` (any answer will do)."""
    probe = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x05probe\x04test\x00\x00\x01\x00\x01"
    deadline = time.time() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        while time.time() < deadline:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"dnsmasq exited with {proc.returncode}: {err}")
            s.sendto(probe, ("127.0.0.1", port))
            try:
                s.recvfrom(512)
                return
            except OSError:
                continue
    raise RuntimeError(f"dnsmasq did not answer on 127.0.0.1:{port}")


@contextlib.contextmanager
def dnsmasq(
    ptr: Mapping[str, str], hosts: Mapping[str, Sequence[str]], zones: Sequence[str] = ("arpa", "com", "test")
) -> Iterator[int]:
    """Serve ``ptr`` (address -> name) and ``hosts`` (name -> addresses); yields the port."""
    port = free_port()
    args = [
        _dnsmasq(),
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--pid-file=",
        "--user=root",
        *(f"--local=/{z}/" for z in zones),
    ]
    for address, name in ptr.items():
        args.append(f"--ptr-record={ipaddress.ip_address(address).reverse_pointer},{name}")
    for name, addresses in hosts.items():
        args.append(f"--host-record={name},{','.join(addresses)}")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_udp(port, proc)
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
