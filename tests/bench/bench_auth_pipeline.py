"""popgate's decision for one forward-auth call, without sockets: CPU µs per call, then
the top functions (cProfile), for a session holder and an anonymous client answered 402,
on the two ways in:

- ``listener``: the forward-auth listener (gateway/http/auth_listener.py) fed the bytes of
  nginx's auth subrequest on an in-memory transport: llhttp, rebuilding the original
  request, ``Gateway.handle``, the answer's bytes. What nginx calls in the shipped config.
- ``main port``: ``Gateway.handle`` on aiohttp request objects (aiohttp's own parsing and
  the socket not counted), rebuilding the original request with ``request.clone``.

What a call costs popgate beyond this is the socket and the event loop: compare with the
``popgate's share`` rows of bench_forward_auth.py / bench_forward_auth_floor.py.

    python tests/bench/bench_auth_pipeline.py [--calls 20000] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, cast

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from popgate.gateway.app import build_app
from popgate.gateway.extensions import default_extensions
from popgate.gateway.http.auth_listener import AuthListener, AuthProtocol
from popgate.gateway.http.server import tune_collector
from popgate.gateway.ops.config import load_config
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.ops.workers import loop_runner
from popgate.gateway.stores import open_store
from tests.bench.bench_proxy import session_token

NGINX_HEADERS = {
    "Host": "popgate",
    "X-Popgate-Auth": "subrequest",
    "X-Forwarded-Method": "GET",
    "X-Forwarded-Uri": "/bench",
    "X-Forwarded-Host": "localhost",
    "X-Forwarded-Proto": "http",
    "X-Forwarded-For": "127.0.0.1",
    "User-Agent": "wrk",
}


class _Transport:
    """The peer nginx: what the gateway asks of a transport (no mocks: plain values);
    what the listener writes is kept (the last answer)."""

    def __init__(self) -> None:
        self.last = b""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None:
        self.last = data

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass


class _Protocol:
    transport = _Transport()
    peername = ("127.0.0.1", 40000)
    sockname = ("127.0.0.1", 8080)
    ssl_context = None


async def measure(calls: int, profile: bool) -> None:
    tmp = tempfile.mkdtemp(prefix="pg-pipe-")
    keyfile = os.path.join(tmp, "k1")
    Path(keyfile).write_bytes(os.urandom(32).hex().encode())
    Path(tmp, "auth.toml").write_text(
        '[server]\nlisten = "127.0.0.1:1"\nadmin = "127.0.0.1:2"\nmode = "auth"\n'
        'trusted_proxies = ["127.0.0.1/32"]\n[store]\nurl = "memory://"\n'
        f'[sessions]\nkeys = [{{kid = "k1", secret_file = "{keyfile}"}}]\n'
        f'[puzzle]\nkeys = [{{kid = "p1", secret_file = "{keyfile}"}}]\n'
    )
    config = load_config(str(Path(tmp, "auth.toml")))
    gateway = build_app(
        config, store=open_store("memory://"), metrics=Metrics(), extensions=default_extensions()
    )
    listener = AuthListener(gateway.handle, config.limits, config.trusted_proxies)
    tune_collector()  # as a serving process does once it has started
    cases = (("session (allow)", {"Authorization": f"PoP {session_token(keyfile)}"}), ("anonymous (402)", {}))
    for name, extra in cases:
        headers = {**NGINX_HEADERS, **extra}
        wire = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        data = f"GET /.well-known/popgate/auth HTTP/1.1\r\n{wire}\r\n".encode()
        conn, transport = AuthProtocol(listener), _Transport()
        conn.connection_made(cast(Any, transport))

        async def on_listener(_: int, conn: AuthProtocol = conn, data: bytes = data) -> None:
            conn.data_received(data)
            await cast(asyncio.Task[None], conn.task)

        requests = [
            make_mocked_request(
                "GET",
                "/.well-known/popgate/auth",
                headers=CIMultiDict(headers),
                protocol=_Protocol(),
                transport=_Transport(),
                writer=object(),
                app=object(),
            )
            for _ in range(calls)
        ]

        async def on_main_port(i: int, requests: list[Any] = requests) -> None:
            await gateway.handle(requests[i])

        for way, call in (("listener", on_listener), ("main port", on_main_port)):
            await call(0)
            t = time.process_time()
            for i in range(1, calls):
                await call(i)
            us = (time.process_time() - t) / (calls - 1) * 1e6
            print(f"{name:16s} {way:9s} {us:6.1f} µs CPU per call")
            if profile:
                prof = cProfile.Profile()
                prof.enable()
                for i in range(1, calls // 2):
                    await call(i)
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(15)
        status_line = transport.last.partition(b"\r\n")[0].decode()
        print(f"{'':16s} the listener answered: {status_line}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    with loop_runner() as runner:  # as `popgate run` serves: uvloop when installed
        runner.run(measure(args.calls, args.profile))


if __name__ == "__main__":
    main()
