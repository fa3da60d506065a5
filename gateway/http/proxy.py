"""Forwarding an allowed request to the upstream, streaming both ways.

Request bodies are read up to ``limits.request_buffer`` before an upstream slot
is taken, then stream at a minimum rate (:mod:`gateway.http.paced_body`);
slots are admitted by :mod:`gateway.http.admission` (reserved share, per-network
cap, ``pool_wait`` deadline). Response bodies stream back, except small ones with a known
length (``limits.buffer_below``), which are read in one go: cheaper, and
still bounded. Hop-by-hop headers go; forwarding headers and ``PoP-*`` are
set by popgate alone; popgate's own credentials go by one table
(:class:`gateway.http.headers.Credentials`), on WebSocket upgrades too. The
origin is sent the target popgate matched its policy on
(:attr:`gateway.http.target.Target.forward`: normalized path, origin-form).
A payment rail may set ``ctx.answer_hook``: awaited with the origin's status
and headers before a byte of the answer is sent, it may edit them or raise a
GatewayError that replaces the answer (the origin's body is then never read).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from aiohttp import web

from popgate.gateway.errors import GatewayError
from popgate.gateway.http.admission import UpstreamGate
from popgate.gateway.http.headers import FORWARDING, HOP_BY_HOP, POP_PREFIX, Credentials, connection_tokens
from popgate.gateway.http.paced_body import paced, prebuffer
from popgate.gateway.http.upstream import BodyError, UpstreamClient, UpstreamResponse
from popgate.gateway.http.websocket import SKIP, WebSocketProxy, check_handshake, is_upgrade
from popgate.gateway.ops.config import Config
from popgate.gateway.pipeline.context import Context

log = logging.getLogger("popgate.proxy")
CHUNK = 64 * 1024


class Forwarder:
    """Turns an allowed request into an upstream exchange."""

    def __init__(self, config: Config, upstream: UpstreamClient) -> None:
        origin = config.upstream
        if origin is None:
            raise ValueError("no [server] upstream: forward-auth mode proxies nothing")
        self.upstream = upstream
        self.limits = config.limits
        self.host = origin.authority
        self.via = f"1.1 {config.via_name}"
        self.trusted = bool(config.trusted_proxies)
        x402 = config.features.x402  # its payment headers are popgate's unless the operator forwards them
        self.credentials = Credentials(
            config.sessions.cookie_name, payments=x402 is not None and not x402.forward_payment_header
        )
        # every header name never forwarded whatever its value, in one set (PoP-* by prefix)
        self.dropped = HOP_BY_HOP | FORWARDING | self.credentials.headers
        self.websockets = WebSocketProxy(origin.url, self.limits.connect_timeout)
        self.gate = UpstreamGate(self.limits)

    def request_headers(self, ctx: Context, skip: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
        """Headers for the upstream: the client's, cleaned, plus ours (``skip``: names left out)."""
        request = ctx.request
        headers = request.headers
        conn = connection_tokens(headers.getall("Connection", ())) if "Connection" in headers else ()
        out: list[tuple[str, str]] = [] if "host" in skip else [("Host", self.host)]
        credentials = self.credentials
        dropped = self.dropped
        drop = ctx.consumed or ()
        for name, value in headers.items():
            low = name.lower()
            if low in dropped or low.startswith(POP_PREFIX) or low in conn or low in drop or low in skip:
                continue
            if low == "authorization" or low == "cookie":
                cleaned = credentials.clean(low, value)
                if cleaned is None:
                    continue
                value = cleaned
            out.append((name, value))
        peer = str(request.remote or "")
        prior = ",".join(headers.getall("X-Forwarded-For", ())) if self.trusted else ""
        out.append(("X-Forwarded-For", f"{prior}, {peer}" if prior else peer))
        proto = headers.get("X-Forwarded-Proto") if self.trusted else None
        out.append(("X-Forwarded-Proto", proto or request.scheme))
        out.append(("X-Forwarded-Host", ctx.target.authority))
        via = headers.get("Via")
        out.append(("Via", f"{via}, {self.via}" if via else self.via))
        out.extend(ctx.origin_headers())
        return out

    async def forward(self, ctx: Context) -> web.StreamResponse:
        """Send ``ctx.request`` upstream and answer with what comes back.

        Raises GatewayError subclasses (502, 504, 413, 400) before any byte
        of the response is sent; after that, errors end the connection.
        """
        request = ctx.request
        target = ctx.target.forward
        if is_upgrade(request):
            check_handshake(request)
            headers = self.request_headers(ctx, SKIP)
            return await self.websockets.forward(request, target, headers, ctx.response_headers)
        ticket = self.gate.enter(ctx)  # admission: see gateway.http.admission
        try:
            body = await self._body(request)
            await self.gate.slot(ticket)
            try:
                upstream = await self.upstream.send(request.method, target, self.request_headers(ctx), body)
            except BodyError as exc:
                raise exc.error from None
            try:
                return await self._respond(ctx, upstream)
            except BodyError as exc:
                raise exc.error from None
            finally:
                upstream.release()
        finally:
            self.gate.leave(ticket)

    async def _body(self, request: web.BaseRequest) -> AsyncIterator[bytes] | None:
        """The body to send, its first ``request_buffer`` bytes already read
        (:mod:`gateway.http.paced_body`: before an upstream slot is taken)."""
        if not request.body_exists:
            return None
        pre = getattr(request, "_read_bytes", None)  # a body a verifier already read
        if pre is not None:
            return _once(pre)
        first, complete, pace = await prebuffer(request, self.limits)
        return _once(first) if complete else paced(request, first, pace, self.limits)

    async def _respond(self, ctx: Context, up: UpstreamResponse) -> web.StreamResponse:
        headers = up.headers
        conn = {
            v.strip().lower() for k, vals in headers if k.lower() == "connection" for v in vals.split(",")
        }
        out = []
        length = None
        for name, value in headers:
            low = name.lower()
            if low in HOP_BY_HOP or low in conn:
                continue
            if low == "content-length":
                length = value
                continue
            out.append((name, value))
        if ctx.answer_hook is not None:  # e.g. x402 upto: settle what the answer reports, or refuse it
            await ctx.answer_hook(up.status, out)
        out.append(("Via", self.via))
        if not any(name.lower() == "server" for name, _ in out):
            out.append(("Server", "popgate"))  # else aiohttp would add its own, with versions
        out.extend(ctx.response_headers)
        status = up.status
        if length is not None and length.isdigit() and int(length) <= self.limits.buffer_below:
            body = await up.read(int(length))
            resp: web.StreamResponse = web.Response(status=status, body=body, reason=up.reason)
            resp.headers.extend(out)
            if request_is_head(ctx):
                resp.headers["Content-Length"] = length
            return resp
        resp = web.StreamResponse(status=status, reason=up.reason)
        resp.headers.extend(out)
        if length is not None and length.isdigit():
            resp.content_length = int(length)
        await resp.prepare(ctx.request)
        try:
            async for chunk in up.iter_chunks():
                await resp.write(chunk)
        except (GatewayError, BodyError) as exc:
            # Headers are gone: the only honest signal left is a cut connection.
            log.warning("body failed mid-stream: %s", exc)
            transport = ctx.request.transport
            if transport is not None:
                transport.close()
            return resp
        await resp.write_eof()
        return resp


async def _once(data: bytes) -> AsyncIterator[bytes]:
    """A body already read (e.g. to check its Content-Digest), sent as one chunk."""
    if data:
        yield data


def request_is_head(ctx: Context) -> bool:
    return ctx.request.method == "HEAD"
