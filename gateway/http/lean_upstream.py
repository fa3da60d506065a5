"""A lean HTTP/1.1 upstream client on asyncio protocols and llhttp (httptools).

Why: aiohttp's ``ClientSession`` costs more CPU per request than the rest of
the gateway together. This client does only what a reverse proxy needs:
one origin, a keep-alive pool, Content-Length / chunked / close-delimited
response bodies (framing parsed strictly by llhttp), streaming with flow
control, connect and idle-read timeouts, and one retry on a stale pooled
connection for requests without a body. WebSocket upgrades do not come here.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from typing import cast

import httptools

from popgate.gateway.errors import UpstreamTimeout, UpstreamUnreachable
from popgate.gateway.http.upstream import BodyError
from popgate.gateway.ops.config import Limits
from popgate.gateway.ops.config import Upstream as UpstreamConfig

HIGH_WATER = 1 << 20
LOW_WATER = 1 << 18


class _Conn(asyncio.Protocol):
    """One upstream connection; parses one response at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self.have_head = False
        self.status = 0
        self.reason = ""
        self.headers: list[tuple[str, str]] = []
        self.body: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.got_data = False
        self.last_data = 0.0
        self.head_only = False
        self.body_task: asyncio.Task[None] | None = None
        self.body_error: BodyError | None = None
        self.writable = asyncio.Event()  # cleared while the transport's write buffer is over HIGH_WATER
        self.writable.set()

    # -- protocol callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport: asyncio's, or uvloop's (which does not subclass asyncio.Transport).
        stream = cast(asyncio.Transport, transport)
        stream.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        self.transport = stream

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.writable.set()
        if not self.complete:
            if self.have_head and self.until_close and exc is None:
                self.complete = True  # a body delimited by the connection's end
            else:
                self._fail(UpstreamUnreachable(f"connection lost: {exc or 'closed by upstream'}"))
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.got_data = True
        self.last_data = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(UpstreamUnreachable("unexpected upgrade"))
        except httptools.HttpParserError as exc:
            self._fail(UpstreamUnreachable(f"bad response: {exc}"))
            if self.transport is not None:
                self.transport.close()

    def on_status(self, status: bytes) -> None:
        self.reason = status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        code = self.parser.get_status_code()
        if 100 <= code < 200 and code != 101:
            self.headers = []  # interim response: wait for the real one
            return
        self.status = code
        self.have_head = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it after the body
        names = {n.lower() for n, _ in self.headers}
        self.until_close = (
            "content-length" not in names
            and "transfer-encoding" not in names
            and code not in (204, 304)
            and not self.head_only
        )
        self._wake()
        if self.head_only:
            self.on_message_complete()
            self.parser = httptools.HttpResponseParser(self)

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and not self.paused and self.transport is not None:
            self.transport.pause_reading()
            self.paused = True
        self._wake()

    def on_message_complete(self) -> None:
        if self.status == 0:
            return
        self.complete = True
        self._wake()

    # -- helpers
    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self._wake()

    def writer(self) -> asyncio.Transport:
        """The transport to write to; only called once the connection is made."""
        if self.transport is None:
            raise RuntimeError("upstream connection not made")
        return self.transport

    def _wake(self) -> None:
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def reset(self, head_only: bool) -> None:
        self.have_head = self.keep_alive = False
        self.status, self.reason, self.headers = 0, "", []
        self.body.clear()
        self.buffered, self.complete, self.error, self.got_data = 0, False, None, False
        self.head_only = head_only
        self.body_task, self.body_error = None, None

    def reusable(self) -> bool:
        task = self.body_task
        if task is not None and not task.done():
            task.cancel()
            return False
        return (
            self.body_error is None
            and self.complete
            and self.keep_alive
            and not self.closed
            and self.error is None
        )


class LeanResponse:
    """The response being received on a connection (one at a time)."""

    __slots__ = ("_client", "_conn", "_released", "headers", "reason", "status")

    def __init__(self, client: LeanUpstream, conn: _Conn) -> None:
        self._client = client
        self._conn = conn
        self.status = conn.status
        self.reason = conn.reason
        self.headers: Sequence[tuple[str, str]] = conn.headers
        self._released = False

    async def _next(self) -> bytes | None:
        conn = self._conn
        while True:
            if conn.body:
                chunk = conn.body.popleft()
                conn.buffered -= len(chunk)
                if conn.paused and conn.buffered < LOW_WATER and conn.transport is not None:
                    conn.transport.resume_reading()
                    conn.paused = False
                return chunk
            if conn.complete:
                return None
            if conn.body_error is not None:
                raise conn.body_error
            if conn.error is not None:
                raise conn.error
            if conn.closed:
                raise UpstreamUnreachable("connection closed mid-body")
            await self._client.wait(conn)

    async def read(self, limit: int) -> bytes:
        parts, size = [], 0
        while (chunk := await self._next()) is not None:
            parts.append(chunk)
            size += len(chunk)
            if size > limit:
                raise UpstreamUnreachable("response body longer than its Content-Length")
        return b"".join(parts)

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self._next()) is not None:
            yield chunk

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._client.put_back(self._conn)


class LeanUpstream:
    """:class:`~gateway.http.upstream.UpstreamClient` on pooled asyncio connections."""

    def __init__(self, upstream: UpstreamConfig, limits: Limits) -> None:
        if upstream.scheme != "http":
            raise ValueError("the lean client speaks plain http; use AiohttpUpstream for https")
        self.host, self.port = upstream.host, upstream.port
        self.connect_timeout = limits.connect_timeout
        self.read_timeout = limits.read_timeout
        self.keepalive = limits.keepalive_timeout
        self.max_conns = limits.pool_size
        self.idle: collections.deque[_Conn] = collections.deque()
        self.active = 0
        self.slots: collections.deque[asyncio.Future[None]] = collections.deque()

    async def _acquire(self) -> tuple[_Conn, bool]:
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self.idle:
            conn = self.idle.pop()
            if not conn.closed and now - conn.idle_since < self.keepalive:
                return conn, True
            if conn.transport is not None:
                conn.transport.close()
            self.active -= 1
        while self.active >= self.max_conns:
            slot = loop.create_future()
            self.slots.append(slot)
            await slot
        self.active += 1
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Conn(loop), self.host, self.port), self.connect_timeout
            )
        except TimeoutError:
            self._forget()
            raise UpstreamTimeout("connecting") from None
        except OSError as exc:
            self._forget()
            raise UpstreamUnreachable(f"connect: {exc}") from None
        return conn, False

    def _forget(self) -> None:
        self.active -= 1
        while self.slots:
            slot = self.slots.popleft()
            if not slot.done():
                slot.set_result(None)
                break

    def put_back(self, conn: _Conn) -> None:
        if conn.reusable():
            conn.idle_since = conn.loop.time()
            self.idle.append(conn)
            while self.slots:  # a waiter can take this connection
                slot = self.slots.popleft()
                if not slot.done():
                    slot.set_result(None)
                    break
            return
        if conn.transport is not None:
            conn.transport.close()
        self._forget()

    async def wait(self, conn: _Conn) -> None:
        """Wait for more from ``conn``; it fails with UpstreamTimeout after
        ``read_timeout`` seconds without data."""
        loop = conn.loop
        conn.waiter = loop.create_future()
        handle = loop.call_later(self.read_timeout, _timed_out, conn)
        try:
            await conn.waiter
        finally:
            handle.cancel()
            conn.waiter = None

    async def send(
        self, method: str, target: str, headers: list[tuple[str, str]], body: AsyncIterable[bytes] | None
    ) -> LeanResponse:
        head = _serialize(method, target, headers, body is not None)
        chunked = body is not None and "content-length" not in _names(headers)
        for attempt in (0, 1):
            conn, reused = await self._acquire()
            conn.reset(head_only=method == "HEAD")
            conn.last_data = conn.loop.time()
            try:
                conn.writer().write(head)
                if body is not None:
                    # Full duplex: the origin may answer while we still send.
                    conn.body_task = conn.loop.create_task(self._send_body(conn, body, chunked))
                await self._wait_head(conn)
                return LeanResponse(self, conn)
            except UpstreamUnreachable as exc:
                stale = (
                    reused
                    and not conn.got_data
                    and body is None
                    and attempt == 0
                    and not isinstance(exc, UpstreamTimeout)
                )
                self._discard(conn)
                if stale:
                    continue
                raise
            except BaseException:
                self._discard(conn)
                raise
        raise AssertionError("unreachable")

    def _discard(self, conn: _Conn) -> None:
        conn.complete = False
        self.put_back(conn)

    async def _wait_head(self, conn: _Conn) -> None:
        while not conn.have_head:
            if conn.body_error is not None:
                raise conn.body_error
            if conn.error is not None:
                raise conn.error
            await self.wait(conn)

    async def _send_body(self, conn: _Conn, body: AsyncIterable[bytes], chunked: bool) -> None:
        transport = conn.writer()
        try:
            async for chunk in body:
                if conn.closed or conn.error is not None:
                    return
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                if transport.get_write_buffer_size() > HIGH_WATER:
                    await self._drain(conn)
        except BodyError as exc:
            conn.body_error = exc
            conn.keep_alive = False
            transport.close()
            conn._wake()
            return
        if chunked and not conn.closed:
            transport.write(b"0\r\n\r\n")

    async def _drain(self, conn: _Conn) -> None:
        if not conn.closed:
            await conn.writable.wait()  # set again by resume_writing (below LOW_WATER) or connection_lost

    async def close(self) -> None:
        while self.idle:
            conn = self.idle.pop()
            if conn.transport is not None:
                conn.transport.close()


def _timed_out(conn: _Conn) -> None:
    conn._fail(UpstreamTimeout("no data from upstream within the read timeout"))
    if conn.transport is not None:
        conn.transport.close()


def _names(headers: list[tuple[str, str]]) -> set[str]:
    return {k.lower() for k, _ in headers}


def _serialize(method: str, target: str, headers: list[tuple[str, str]], has_body: bool) -> bytes:
    """The request head; refuses CR/LF in any field (header injection)."""
    lines = [f"{method} {target} HTTP/1.1"]
    chunked = has_body and "content-length" not in _names(headers)
    for name, value in headers:
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise UpstreamUnreachable(f"refusing header with CR/LF: {name}")
        lines.append(f"{name}: {value}")
    if chunked:
        lines.append("Transfer-Encoding: chunked")
    lines.append("\r\n")
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")
