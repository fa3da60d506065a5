"""popgate's decision for one forward-auth call, without HTTP: ``Gateway.handle`` on
in-memory requests carrying what nginx's auth subrequest carries (a session holder; an
anonymous client answered 402). CPU µs per call, then the top functions (cProfile).

What a forward-auth call costs popgate beyond this is its HTTP layer (aiohttp's parser,
request and response objects, the socket): compare with the ``popgate's share`` rows of
bench_forward_auth.py / bench_forward_auth_floor.py.

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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from popgate.gateway.app import build_app
from popgate.gateway.extensions import default_extensions
from popgate.gateway.ops.config import load_config
from popgate.gateway.ops.metrics import Metrics
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
    """The peer nginx: what the gateway asks of a transport (no mocks: plain values)."""

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def is_closing(self) -> bool:
        return False


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
    )
    config = load_config(str(Path(tmp, "auth.toml")))
    gateway = build_app(
        config, store=open_store("memory://"), metrics=Metrics(), extensions=default_extensions()
    )
    cases = (("session (allow)", {"Authorization": f"PoP {session_token(keyfile)}"}), ("anonymous (402)", {}))
    for name, extra in cases:
        headers = CIMultiDict({**NGINX_HEADERS, **extra})
        requests = [
            make_mocked_request(
                "GET",
                "/.well-known/popgate/auth",
                headers=headers,
                protocol=_Protocol(),
                transport=_Transport(),
                writer=object(),
                app=object(),
            )
            for _ in range(calls)
        ]
        status = (await gateway.handle(requests[0])).status
        t = time.process_time()
        for request in requests[1:]:
            await gateway.handle(request)
        us = (time.process_time() - t) / (calls - 1) * 1e6
        print(f"{name:18s} answer {status}: {us:6.1f} µs CPU per call (Gateway.handle, no HTTP)")
        if profile:
            prof = cProfile.Profile()
            prof.enable()
            for request in requests[1 : calls // 2]:
                await gateway.handle(request)
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(15)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    asyncio.run(measure(args.calls, args.profile))


if __name__ == "__main__":
    main()
