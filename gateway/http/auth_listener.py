"""The forward-auth listener (``[server] auth_listen``): a lean HTTP/1.1 server for
the edge proxy's auth calls, and nothing else.

An auth call is small and the same shape every time, and the proxy makes one per
client request (per verdict-cache miss), so the HTTP server's own cost is most of
what popgate spends on it: aiohttp's server costs ~100 µs of CPU per call here,
this listener ~10 µs. It parses with llhttp (httptools, the parser aiohttp's
own C parser is built on), builds the request object the pipeline takes directly,
runs the gateway's one entry (:meth:`Gateway.handle <gateway.app.Gateway.handle>`:
admission, the same pipeline, metrics, access log) and writes the answer's bytes
itself. Answers are the same as on the main port (tests run both).

- Only peers in ``[server] trusted_proxies``: anyone else gets ``403`` and the
  connection closes before a byte of the request is read.
- Only the auth endpoint's paths (``/.well-known/popgate/auth[/...]``): others 404.
- Keep-alive and pipelining (answers in order); limits as on the main port: a
  header line over ``max_header_bytes`` (at least 8 KiB) or more than
  ``max_header_count`` + 1 headers (the main port's bound): ``431``; a body (a render call's sealed verdict)
  over 64 KiB: ``413``; a malformed request: ``400``; a head not whole within
  ``client_header_timeout``: ``408``; an idle connection closes after
  ``client_keepalive_timeout``. Every error closes the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any, cast

import httptools
from aiohttp import web
from aiohttp.http import HttpVersion11, RawRequestMessage
from aiohttp.streams import EMPTY_PAYLOAD
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from popgate.gateway.errors import GatewayError
from popgate.gateway.http.auth_wire import (
    NOT_AUTH,
    NOT_AUTH_CLOSE,
    UNTRUSTED,
    Clock,
    Last,
    Refused,
    encode,
    malformed,
    problem_bytes,
)
from popgate.gateway.http.forward_auth import (
    DROP,
    SEALED_KEY,
    STYLE_HEADER,
    TARGET,
    AuthCall,
    is_auth_path,
    original_target,
)
from popgate.gateway.http.headers import IPAddress, Network, client_address, is_trusted, parse_ip
from popgate.gateway.http.verdicts import MAX_SEALED
from popgate.gateway.ops.config import Limits

log = logging.getLogger("popgate.auth_listener")

SWEEP = 1.0  # seconds between timeout sweeps (one timer for every connection)
CLIENTS_MAX = 4096  # X-Forwarded-For values remembered with the client address they name
_DROP_BYTES = frozenset(name.encode() for name in DROP)
_TARGET_BYTES = frozenset(name.encode() for name in TARGET)


class AuthListener:
    """The listener's shared state: the gateway entry, limits and open connections."""

    def __init__(self, entry: Any, limits: Limits, trusted: tuple[Network, ...]) -> None:
        self.entry = entry  # Gateway.handle
        self.trusted = trusted
        self.line_limit = max(limits.max_header_bytes, 8190)
        self.header_count = limits.max_header_count + 1  # as the main port (aiohttp): room for Host
        self.head_timeout = limits.client_header_timeout
        self.idle_timeout = limits.client_keepalive_timeout
        self.clock = Clock()
        self.connections: set[AuthProtocol] = set()
        self._clients: dict[tuple[str, tuple[str, ...]], tuple[IPAddress, str]] = {}
        self.server: asyncio.Server | None = None
        self._sweeper: asyncio.TimerHandle | None = None

    def client(self, peer: str, xff: list[str]) -> tuple[IPAddress, str] | None:
        """The client behind a call from ``peer`` (as :func:`client_address` walks
        ``X-Forwarded-For``), and its text; remembered per (peer, header values)."""
        key = (peer, tuple(xff))
        known = self._clients.get(key)
        if known is None:
            address = parse_ip(peer)
            if address is None:
                return None
            client = client_address(address, xff, self.trusted)
            known = (client, str(client))
            if len(self._clients) >= CLIENTS_MAX:
                self._clients.clear()
            self._clients[key] = known
        return known

    async def start(self, host: str | None, port: int, *, reuse_port: bool = False) -> None:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(
            lambda: AuthProtocol(self), host, port, reuse_port=reuse_port, backlog=1024
        )
        self._sweeper = loop.call_later(SWEEP, self._sweep)

    @property
    def addresses(self) -> list[Any]:
        return [s.getsockname() for s in self.server.sockets] if self.server is not None else []

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight calls finish (up to ``timeout``), close the rest."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self.server is not None:
            self.server.close()
        for conn in list(self.connections):
            conn.drain()
        tasks = [c.task for c in self.connections if c.task is not None and not c.task.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        for conn in list(self.connections):
            conn.close()
        if self.server is not None:
            await self.server.wait_closed()

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in list(self.connections):
            conn.check(now)
        self._sweeper = asyncio.get_running_loop().call_later(SWEEP, self._sweep)


class AuthProtocol(asyncio.Protocol):
    """One proxy connection: llhttp parses, :meth:`_serve` answers in order."""

    ssl_context = None  # what aiohttp's request object reads from its protocol

    def __init__(self, listener: AuthListener) -> None:
        self.listener = listener
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.peername: Any = None
        self.sockname: Any = None
        self.remote = ""
        self.queue: deque[_Call | bytes] = deque()
        self.busy = False
        self.refused = False  # nothing more is read (a refusal, an upgrade): answer the queue, close
        self.task: asyncio.Task[None] | None = None
        self.last = time.monotonic()
        self.head_started = 0.0  # monotonic time of a partial head's first byte; 0: none
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body = bytearray()

    # connection -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.peername = transport.get_extra_info("peername")
        self.sockname = transport.get_extra_info("sockname")
        peer = parse_ip(self.peername[0]) if self.peername else None
        if peer is None or not is_trusted(peer, self.listener.trusted):
            self.transport.write(UNTRUSTED)
            self.transport.close()
            self.transport = None
            return
        self.remote = str(peer)
        self.listener.connections.add(self)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.listener.connections.discard(self)
        self.transport = None

    def _closed(self) -> bool:
        return self.transport is None

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None

    def drain(self) -> None:
        """Stopping: read nothing more; answer what was read, then close (at once when idle)."""
        if self.busy or self.queue:
            self._close_after(b"")
        else:
            self.close()

    def check(self, now: float) -> None:
        """The sweep: a head not whole in time gets 408; an idle connection closes."""
        if self.transport is None or self.busy:
            return
        if self.head_started and now - self.head_started > self.listener.head_timeout:
            self._refuse(Refused(408, "request_timeout", "The request head did not arrive in time."))
        elif not self.head_started and not self.queue and now - self.last > self.listener.idle_timeout:
            self.close()

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.refused:
            return
        self.last = time.monotonic()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            self._refuse(cause if isinstance(cause, Refused) else malformed())
        except httptools.HttpParserUpgrade:
            # a call carrying the client's Upgrade headers (a WebSocket handshake's auth call):
            # answered like any other; what follows it is not HTTP to llhttp, so close after
            self._close_after(b"")
        except httptools.HttpParserError:
            self._refuse(malformed())
        if self.queue and not self.busy and self.transport is not None:
            self.busy = True
            self.task = asyncio.get_running_loop().create_task(self._serve())

    def _refuse(self, refusal: Refused) -> None:
        log.info("auth listener refused a request: %s", refusal.answer.split(b"\r\n", 1)[0].decode())
        if self.transport is None:
            return
        if self.queue or self.busy:  # the calls before it are answered first, in order
            self._close_after(refusal.answer)
            return
        self.transport.write(refusal.answer)
        self.close()

    def _close_after(self, last: bytes) -> None:
        """Read nothing more; answer what is queued, then ``last``, then close."""
        self.refused = True
        if self.transport is not None:
            self.transport.pause_reading()
        self.queue.append(Last(last))

    # llhttp callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.head_started = time.monotonic()
        self._url = b""
        self._headers = []
        self._body = bytearray()

    def on_url(self, url: bytes) -> None:
        self._url += url
        if len(self._url) > self.listener.line_limit:
            raise Refused(431, "headers_too_large", "The request line is too long.")

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) + len(value) > self.listener.line_limit:
            raise Refused(431, "headers_too_large", "A header field is too long.")
        self._headers.append((name, value))
        if len(self._headers) > self.listener.header_count:
            raise Refused(431, "headers_too_large", "Too many header fields.")

    def on_headers_complete(self) -> None:
        self.head_started = 0.0

    def on_body(self, body: bytes) -> None:
        if len(self._body) + len(body) > MAX_SEALED:
            raise Refused(413, "body_too_large", "An auth call's body (a sealed verdict) is 64 KiB at most.")
        self._body += body

    def on_message_complete(self) -> None:
        target = self._url.decode("utf-8", "surrogateescape")
        if not target.startswith("/"):
            raise Refused(400, "bad_target", "The request target is not a path.")
        path = target.partition("?")[0]
        if not is_auth_path(path):
            self.queue.append(NOT_AUTH if self.parser.should_keep_alive() else NOT_AUTH_CLOSE)
            return
        method = self.parser.get_method().decode("ascii", "replace")
        keep_alive = self.parser.should_keep_alive()
        call = self._original(method, target, keep_alive)
        if call is None:  # a render call, or headers that describe no request: the whole entry decides
            pairs = self._headers
            decoded = [(n.decode("latin-1"), v.decode("utf-8", "surrogateescape")) for n, v in pairs]
            headers = CIMultiDictProxy(CIMultiDict(decoded))
            message = _message(method, target, headers, tuple(pairs), keep_alive)
            call = _Call(message, None, None, self.remote, "http", None)
        call.body = bytes(self._body)
        call.head = method == "HEAD"  # the auth call's own method: its answer has no body
        self.queue.append(call)

    def _original(self, method: str, target: str, keep_alive: bool) -> _Call | None:
        """The original request behind this auth call, rebuilt in one pass over the call's
        headers: those that describe the call set apart, the client's own kept (None: let
        the entry do it)."""
        described: list[tuple[str, str]] = []
        kept: list[tuple[str, str]] = []
        raw: list[tuple[bytes, bytes]] = []
        for name, value in self._headers:
            low = name.lower()
            # names are tokens (llhttp refuses anything else): latin-1 decodes them as UTF-8 would
            pair = (name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
            if low in _TARGET_BYTES:
                described.append(pair)
            if low in _DROP_BYTES:
                continue
            kept.append(pair)
            raw.append((name, value))
        call = CIMultiDictProxy(CIMultiDict(described))
        style = call.get(STYLE_HEADER, "").strip().lower()
        if style == "render":
            return None
        try:
            method, uri, host, proto = original_target(call, method, target, "http")
        except GatewayError:
            return None
        original = CIMultiDict(kept)
        client = self.listener.client(self.remote, original.getall("X-Forwarded-For", []))
        if client is None:
            return None
        original["Host"] = host
        raw.append((b"Host", host.encode()))
        message = _message(method, uri, CIMultiDictProxy(original), tuple(raw), keep_alive)
        return _Call(message, AuthCall(style), client[0], client[1], proto, host)

    # answers -------------------------------------------------------------------------

    async def _serve(self) -> None:
        """Answer the queued requests in order (one task while there are any)."""
        try:
            while self.queue and self.transport is not None:
                item = self.queue.popleft()
                if isinstance(item, bytes):
                    self.transport.write(item)
                    if isinstance(item, Last):
                        self.close()
                    continue
                data = await self._answer(item)
                if self._closed():  # the proxy went away while popgate decided
                    return
                self.transport.write(data)
                if item.message.should_close:
                    self.close()
        finally:
            self.busy = False
            self.last = time.monotonic()

    async def _answer(self, call: _Call) -> bytes:
        request = web.BaseRequest(
            call.message,
            EMPTY_PAYLOAD,
            cast(Any, self),
            cast(Any, None),
            cast(Any, None),
            asyncio.get_running_loop(),
            scheme=call.scheme,
            host=call.host,
            remote=call.remote,
        )
        if call.body:
            request[SEALED_KEY] = call.body
        try:
            response = await self.listener.entry(request, call.auth, call.client)
        except Exception:  # the entry answers every error itself: this is a bug, never a hang
            log.exception("auth listener: the gateway's entry failed")
            return problem_bytes(500, "internal_error", "The verdict could not be made.")
        try:
            return encode(response, not call.message.should_close, self.listener.clock.date(), call.head)
        except ValueError:
            log.error("auth listener: an answer could not be encoded (status %s)", response.status)
            return problem_bytes(500, "internal_error", "The answer could not be encoded.")


class _Call:
    """A parsed request: its message, and when the listener rebuilt the original request
    behind an auth call, the call's style and the client's address."""

    __slots__ = ("auth", "body", "client", "head", "host", "message", "remote", "scheme")

    def __init__(
        self,
        message: RawRequestMessage,
        auth: AuthCall | None,
        client: IPAddress | None,
        remote: str,
        scheme: str,
        host: str | None,
    ) -> None:
        self.message = message
        self.auth = auth
        self.client = client
        self.remote = remote
        self.scheme = scheme
        self.host = host
        self.body = b""
        self.head = False


def _message(
    method: str,
    target: str,
    headers: CIMultiDictProxy[str],
    raw: tuple[tuple[bytes, bytes], ...],
    keep_alive: bool,
) -> RawRequestMessage:
    path, _, query = target.partition("?")
    try:
        url = URL.build(path=path, query_string=query, encoded=True)
    except ValueError:
        raise Refused(400, "bad_target", "The request target is malformed.") from None
    return RawRequestMessage(
        method, target, HttpVersion11, headers, raw, not keep_alive, None, False, False, url
    )
