"""Listeners: the proxy port (aiohttp's low-level server) and the admin port.

HTTP parse errors become problem+json: an oversized header line or too many
headers → 431, anything else malformed (smuggling shapes such as conflicting
Content-Length and Transfer-Encoding, bad chunking) → 400. SIGTERM/SIGINT
stop accepting, drain in-flight requests up to ``shutdown_timeout`` and exit.
:func:`start` starts the gateway's background tasks (``Gateway.start()``),
:meth:`Running.stop` stops them (``Gateway.close()``).

Slow clients (slowloris) are cut: a request head must arrive whole within
``limits.client_header_timeout`` of its first byte (or of the accept), and
while a request body is due the client may stay silent for at most
``limits.client_body_timeout`` (not counted while popgate itself holds back,
e.g. a slow upstream). A late head gets ``408``; a stalled body a closed
connection. Idle keep-alive connections close after
``limits.client_keepalive_timeout``. aiohttp alone has no such timeouts.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong
from aiohttp.web_protocol import RequestHandler

from popgate.gateway.app import Gateway, build_app
from popgate.gateway.extensions import default_extensions
from popgate.gateway.http.auth_listener import AuthListener
from popgate.gateway.ops.admin import build_admin
from popgate.gateway.ops.config import Config
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.stores import open_store

log = logging.getLogger("popgate.server")


_TIMEOUT_BODY = json.dumps(
    {
        "type": "urn:popgate:problem:request_timeout",
        "title": "Request timeout",
        "status": 408,
        "reason": "request_timeout",
    }
).encode()
_TIMEOUT_408 = (
    b"HTTP/1.1 408 Request Timeout\r\nContent-Type: application/problem+json\r\n"
    b"Connection: close\r\nCache-Control: no-store\r\nContent-Length: "
    + str(len(_TIMEOUT_BODY)).encode()
    + b"\r\n\r\n"
    + _TIMEOUT_BODY
)


class _Protocol(RequestHandler):
    """aiohttp's request handler plus client header/body timeouts."""

    def __init__(
        self,
        manager: Any,
        *,
        head_timeout: float,
        body_timeout: float,
        on_timeout: Callable[[str], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._pg_head_timeout = head_timeout
        self._pg_body_timeout = body_timeout
        self._pg_on_timeout = on_timeout
        self._pg_head_timer: asyncio.TimerHandle | None = None
        self._pg_body_timer: asyncio.TimerHandle | None = None
        self._pg_payload: Any = None
        self._pg_last_data = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._pg_arm_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        for timer in (self._pg_head_timer, self._pg_body_timer):
            if timer is not None:
                timer.cancel()
        self._pg_head_timer = self._pg_body_timer = None
        self._pg_payload = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._pg_last_data = self._loop.time()
        before = self._request_count
        messages = self._messages
        super().data_received(data)
        if self._request_count != before:  # a whole head arrived
            if self._pg_head_timer is not None:
                self._pg_head_timer.cancel()
                self._pg_head_timer = None
            payload = messages[-1][1] if messages else None
            if payload is not None and not payload.is_eof():
                self._pg_payload = payload
                if self._pg_body_timer is None:
                    self._pg_body_timer = self._loop.call_later(self._pg_body_timeout, self._pg_check_body)
        elif data and self._pg_head_timer is None and self._pg_idle():
            self._pg_arm_head()  # first byte of the next request head

    def _pg_idle(self) -> bool:
        waiter = self._waiter
        return waiter is not None and not waiter.done() and not self._messages

    def _pg_arm_head(self) -> None:
        self._pg_head_timer = self._loop.call_later(self._pg_head_timeout, self._pg_check_head)

    def _pg_check_head(self) -> None:
        self._pg_head_timer = None
        transport = self.transport
        if transport is None or not self._pg_idle() or self._current_request is not None:
            return
        self._pg_on_timeout("header")
        transport.write(_TIMEOUT_408)
        self.force_close()
        transport.close()

    def _pg_check_body(self) -> None:
        self._pg_body_timer = None
        payload, transport = self._pg_payload, self.transport
        if payload is None or transport is None or payload.is_eof():
            self._pg_payload = None
            return
        now = self._loop.time()
        due = self._pg_last_data + self._pg_body_timeout
        if self._reading_paused or now < due:  # popgate holds back, or the client spoke
            self._pg_body_timer = self._loop.call_later(
                max(due - now, 0.05) if not self._reading_paused else self._pg_body_timeout,
                self._pg_check_body,
            )
            return
        self._pg_on_timeout("body")
        self.force_close()
        transport.close()

    def handle_error(
        self, request: Any, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status != 400 or exc is None:
            return super().handle_error(request, status, exc, message)
        too_big = isinstance(exc, LineTooLong) or "Too many headers" in str(exc)
        code, reason, title = (
            (431, "headers_too_large", "Request header fields too large")
            if too_big
            else (400, "malformed_request", "Malformed request")
        )
        # The parser's message quotes the offending bytes (credentials too): log the kind only.
        self.logger.info("rejected malformed request: %s", type(exc).__name__)
        body = json.dumps(
            {"type": f"urn:popgate:problem:{reason}", "title": title, "status": code, "reason": reason}
        ).encode()
        resp = web.Response(
            status=code,
            body=body,
            content_type="application/problem+json",
            headers={"Cache-Control": "no-store"},
        )
        resp.force_close()
        return resp


class _Server(web.Server):
    def __init__(
        self,
        handler: Any,
        *,
        head_timeout: float,
        body_timeout: float,
        on_timeout: Callable[[str], None],
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, **kwargs)
        self._head_timeout, self._body_timeout, self._on_timeout = head_timeout, body_timeout, on_timeout

    def __call__(self) -> RequestHandler:
        return _Protocol(
            self,
            loop=self._loop,
            head_timeout=self._head_timeout,
            body_timeout=self._body_timeout,
            on_timeout=self._on_timeout,
            **self._kwargs,
        )


def proxy_server(gateway: Gateway, config: Config) -> web.Server:
    """The low-level aiohttp server for the proxy port."""
    limits = config.limits
    line = max(limits.max_header_bytes, 8190)
    counter = gateway.metrics.client_timeouts

    def on_timeout(phase: str) -> None:
        counter.labels(phase).inc()
        log.info("closed a connection: client %s timeout", phase)

    return _Server(
        gateway.entry,
        max_line_size=line,
        max_field_size=line,
        max_headers=limits.max_header_count + 1,
        keepalive_timeout=limits.client_keepalive_timeout,
        head_timeout=limits.client_header_timeout,
        body_timeout=limits.client_body_timeout,
        on_timeout=on_timeout,
        access_log=None,  # popgate's own access log (gateway.ops.logs): aiohttp's logs raw addresses
    )


class Running:
    """A started gateway: its runners, sites and addresses."""

    def __init__(
        self,
        gateway: Gateway,
        proxy: web.ServerRunner,
        admin: web.AppRunner,
        auth: AuthListener | None = None,
        shutdown_timeout: float = 30.0,
    ) -> None:
        self.gateway = gateway
        self.proxy = proxy
        self.admin = admin
        self.auth = auth  # the lean forward-auth listener, when [server] auth_listen is set
        self.shutdown_timeout = shutdown_timeout

    def addresses(self) -> dict[str, Any]:
        out = {"proxy": self.proxy.addresses, "admin": self.admin.addresses}
        if self.auth is not None:
            out["auth"] = self.auth.addresses
        return out

    async def stop(self) -> None:
        """Stop accepting, drain in-flight requests, then release everything."""
        if self.auth is not None:
            await self.auth.stop(self.shutdown_timeout)
        await self.proxy.cleanup()
        await self.admin.cleanup()
        await self.gateway.close()
        await self.gateway.services.store.close()


async def start(config: Config, *, reuse_port: bool = False, gateway: Gateway | None = None) -> Running:
    """Open the store, build the gateway and start both listeners."""
    if gateway is None:
        store = open_store(
            config.store.url, timeout=config.store.timeout, replica_acks=config.store.replica_acks
        )
        gateway = build_app(config, store=store, metrics=Metrics(), extensions=default_extensions())
    await gateway.start()  # background tasks (pressure monitor, settlement worker); stop() closes them
    runner = web.ServerRunner(
        proxy_server(gateway, config), shutdown_timeout=config.shutdown_timeout, handle_signals=False
    )
    await runner.setup()
    site = web.TCPSite(
        runner, config.listen.bind_host, config.listen.port, reuse_port=reuse_port, backlog=1024
    )
    await site.start()
    admin_runner = web.AppRunner(build_admin(gateway), handle_signals=False, access_log=None)
    await admin_runner.setup()
    await web.TCPSite(admin_runner, config.admin.bind_host, config.admin.port, reuse_port=reuse_port).start()
    running = Running(gateway, runner, admin_runner, None, config.shutdown_timeout)
    if config.auth_listen is not None:
        auth = AuthListener(gateway.handle, config.limits, config.trusted_proxies)
        try:
            await auth.start(config.auth_listen.bind_host, config.auth_listen.port, reuse_port=reuse_port)
        except BaseException:
            await running.stop()  # the port is taken (or worse): release what started
            raise
        running.auth = auth
        log.info("forward-auth listener on %s", auth.addresses)
    log.info(
        "popgate %s on %s (admin on %s)",
        f"proxying {config.upstream.url}" if config.upstream else "in forward-auth mode",
        runner.addresses,
        admin_runner.addresses,
    )
    return running


def tune_collector() -> None:
    """Once a serving process has started: what it built so far lives as long as
    the process, so it is moved out of the garbage collector's sight (a full
    collection then scans only what requests made, not the whole application:
    tens of ms each); and a young-generation collection waits for 7,000 new
    objects, not 700 (concurrent requests awaiting the store or the origin keep
    a few thousand alive at once, which every collection would scan again)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(7000, *gc.get_threshold()[1:])


async def serve(
    config: Config, *, reuse_port: bool = False, on_started: Callable[[Running], None] | None = None
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    running = await start(config, reuse_port=reuse_port)
    tune_collector()
    if on_started is not None:
        on_started(running)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, running.gateway.reload)
    await stop.wait()
    log.info("shutting down: draining in-flight requests (up to %ss)", config.shutdown_timeout)
    await running.stop()
