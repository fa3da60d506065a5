"""Sweep: the policy's view of a request (method, normalized path, host) is what the
origin receives, for every target form, percent-encodings, dot-segments, host
spellings, and both upstream clients (``lean`` and ``aiohttp``).

A real origin (aiohttp's low-level server: no routing, it records the raw target
and ``X-Forwarded-Host`` it got) and two real gateways run on loopback in a
background event loop; hypothesis drives them with raw request lines. The
policy's view is tapped where the engine receives it (``holder.current.match``).
"""

from __future__ import annotations

import asyncio
import string
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from popgate.gateway.http.server import Running, start
from popgate.gateway.ops.config import load_config
from popgate.policies.hostnorm import normalize_host
from popgate.policies.model import RequestView
from popgate.policies.pathnorm import normalize_path
from popgate.policies.request import Req
from tests.gateway.http.raw import exchange_sync, request_bytes
from tests.gateway.schemes.puzzle_support import puzzle_extra
from tests.support.servers import write_config

POLICY = '[default]\nall = "allow"\n'
KINDS = ("lean", "aiohttp")


class Tap:
    """Wraps the compiled policy: records each view the engine is asked about."""

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.views: list[RequestView] = []

    def match(self, view: RequestView, klass: str, weight: int) -> Any:
        self.views.append(view)
        return self.policy.match(view, klass, weight)


class Stack:
    """Origin + one gateway per upstream client, in a loop on a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.received: list[tuple[str, str, str]] = []  # (method, raw target, X-Forwarded-Host)
        self.ports: dict[str, int] = {}
        self.taps: dict[str, Tap] = {}
        self.running: list[Running] = []

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _origin(self, request: web.BaseRequest) -> web.Response:
        self.received.append((request.method, request.raw_path, request.headers.get("X-Forwarded-Host", "")))
        return web.Response(text="ok")

    async def _start(self, tmp: Path) -> None:
        self.origin = web.ServerRunner(web.Server(self._origin), access_log=None)
        await self.origin.setup()
        site = web.TCPSite(self.origin, "127.0.0.1", 0)
        await site.start()
        up = f"http://127.0.0.1:{self.origin.addresses[0][1]}"
        for kind in KINDS:
            d = tmp / kind
            d.mkdir()
            cfg = write_config(
                d,
                up,
                extra=puzzle_extra(d, policy=POLICY),
                server_extra=f'upstream_client = "{kind}"',
            )
            running = await start(load_config(cfg))
            self.running.append(running)
            holder = running.gateway.registry.policy.holder
            self.taps[kind] = holder.current = Tap(holder.current)
            self.ports[kind] = running.proxy.addresses[0][1]

    async def _stop(self) -> None:
        for r in self.running:
            await r.stop()
        await self.origin.cleanup()

    def __enter__(self) -> Stack:
        self.thread.start()
        self.run(self._start(Path(tempfile.mkdtemp())))
        return self

    def __exit__(self, *exc: object) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with Stack() as s:
        yield s


PCHARS = string.ascii_letters + string.digits + "-._~!$&'()*+,;=:@"
SEGMENT = st.one_of(
    st.sampled_from(
        [
            *("", ".", "..", "%2e", "%2E%2e", ".%2E", "%2F", "%2f", "%7e", "%7E", "%41", "%25", "%"),
            *("%zz", "%5c", "a", "B", "~", ";x", "\\", "admin", "%C3%A9", "%c3%a9"),
        ]
    ),
    st.text(alphabet=PCHARS, min_size=1, max_size=6),
)
PATH = st.lists(SEGMENT, max_size=6).map(lambda segs: "/" + "/".join(segs))
QUERY = st.one_of(st.just(""), st.text(alphabet=PCHARS + "/?%", max_size=10).map(lambda q: "?" + q))
HOST = st.sampled_from(
    [
        "example.com",
        "Example.COM.",
        "api.example:8080",
        "bücher.example",
        "[2001:DB8::1]:81",
        "127.0.0.1",
        "a..b",
    ]
)
METHOD = st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])


@settings(deadline=None, suppress_health_check=list(HealthCheck))
@given(
    method=METHOD,
    path=PATH,
    query=QUERY,
    fragment=st.sampled_from(["", "#f", "#/../admin"]),
    host=HOST,
    absolute=st.sampled_from(["", "http", "HTTPS"]),
)
def test_policy_sees_what_the_origin_receives(stack, method, path, query, fragment, host, absolute):
    target = path + query + fragment
    if absolute:
        target = f"{absolute}://{host}{target}"
    for kind in KINDS:
        stack.received.clear()
        stack.taps[kind].views.clear()
        headers = [("Host", "other.example" if absolute else host)]
        if method in ("POST", "PUT", "PATCH"):
            headers.append(("Content-Length", "0"))
        r = exchange_sync(stack.ports[kind], request_bytes(f"{method} {target} HTTP/1.1", headers))
        if r.status == 400:  # an invalid host, or bytes the parser refuses
            assert r.headers["content-type"] == "application/problem+json"
            assert stack.received == []
            continue
        assert r.status == 200, (kind, target, r.status, r.body)
        (view,) = stack.taps[kind].views
        (got,) = stack.received
        seen = Req(view)
        o_method, o_target, o_host = got
        o_path, _, o_query = o_target.partition("?")
        assert o_method == view.method == method
        assert o_path == seen.npath, f"{kind}: policy matched {seen.npath!r}, origin got {o_path!r}"
        assert normalize_path(o_path) == o_path, "the origin gets a path it cannot resolve elsewhere"
        assert o_query == view.query
        assert normalize_host(o_host)[0].strip("[]") == seen.host, "policy host == X-Forwarded-Host's"
        assert "#" not in o_target
