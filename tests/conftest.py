"""Fixtures shared by the whole suite: real Redis, real upstream, real gateway."""

from __future__ import annotations

import errno
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis
from hypothesis import HealthCheck, settings

from popgate.gateway.cli.demo_upstream import make_app
from popgate.gateway.http.server import Running, start
from popgate.gateway.ops.config import Config, load_config
from tests.support.servers import redis_server, serve_app, write_config

settings.register_profile("ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "deep", max_examples=20000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """A real redis-server on a free loopback port, for the whole session."""
    with redis_server() as (url, _proc):
        yield url


@pytest.fixture
def redis_url(redis_server_url: str) -> str:
    """The session's redis-server, emptied before each test: no test sees keys another
    left (a settlement left queued by one test was settled by the next one's worker)."""
    client = redis.Redis.from_url(redis_server_url)
    try:
        client.flushall()
    finally:
        client.close()
    return redis_server_url


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    """The demo origin on a free loopback port; yields its base URL."""
    async with serve_app(make_app()) as port:
        yield f"http://127.0.0.1:{port}"


GatewayFactory = Callable[..., Any]


@pytest.fixture
async def gateway_factory(tmp_path: Path) -> AsyncIterator[GatewayFactory]:
    """Start gateways in-process: ``await factory(upstream_url, extra=..., ...)``."""
    running: list[Running] = []

    async def factory(
        upstream_url: str,
        *,
        extra: str = "",
        server_extra: str = "",
        store: str = "memory://",
        config: Config | None = None,
    ) -> Running:
        if config is not None:
            r = await start(config)
        else:
            for attempt in range(3):
                path = write_config(
                    tmp_path, upstream_url, store=store, extra=extra, server_extra=server_extra
                )
                try:
                    r = await start(load_config(path))
                    break
                except OSError as exc:
                    # free_port() only picks a port: another socket may take it before the
                    # gateway binds (a loaded suite opens thousands); new ports, once more
                    if exc.errno != errno.EADDRINUSE or attempt == 2:
                        raise
        running.append(r)
        return r

    yield factory
    for r in running:
        await r.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        yield s


def url_of(running: Running, path: str = "/") -> str:
    host, port = running.proxy.addresses[0][:2]
    return f"http://{host}:{port}{path}"


def admin_url(running: Running, path: str) -> str:
    host, port = running.admin.addresses[0][:2]
    return f"http://{host}:{port}{path}"


def session_token(running: Running, klass: str = "human", **kw: Any) -> str:
    g = running.gateway
    return g.services.sessions.issue(
        klass=klass, subject=kw.pop("subject", f"{klass}:test"), now=g.clock(), ttl=kw.pop("ttl", 300), **kw
    )
