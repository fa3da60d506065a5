"""Forwarding an allowed request to the upstream, streaming both ways.

Request bodies stream to the upstream chunk by chunk, counted against the
body limit; response bodies stream back, except small ones with a known
length (``limits.buffer_below``), which are read in one go: cheaper, and
still bounded. Hop-by-hop headers go; forwarding headers and ``PoP-*`` are
set by popgate alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from popgate.gateway.errors import BadRequest, GatewayError, PayloadTooLarge
from popgate.gateway.http.headers import FORWARDING, HOP_BY_HOP, POP_PREFIX, connection_tokens
from popgate.gateway.http.upstream import BodyError, UpstreamClient, UpstreamResponse
from popgate.gateway.http.websocket import WebSocketProxy, is_upgrade
from popgate.gateway.ops.config import Config
from popgate.gateway.pipeline.context import Context

log = logging.getLogger("popgate.proxy")
# Evidence headers popgate always consumes itself (PoP-* are stripped by prefix).
CONSUMED = frozenset({"x-hashcash"})
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
        self.cookie_name = config.sessions.cookie_name
        self.websockets = WebSocketProxy(origin.url, self.limits.connect_timeout)

    def _ws_headers(self, ctx: Context) -> list[tuple[str, str]]:
        request = ctx.request
        return [
            ("X-Forwarded-For", str(request.remote or "")),
            ("X-Forwarded-Host", request.headers.get("Host", "")),
            ("Via", self.via),
            *ctx.origin_headers(),
        ]

    def request_headers(self, ctx: Context) -> list[tuple[str, str]]:
        """Headers for the upstream: the client's, cleaned, plus ours."""
        request = ctx.request
        headers = request.headers
        conn = connection_tokens(headers.getall("Connection", ())) if "Connection" in headers else ()
        out: list[tuple[str, str]] = [("Host", self.host)]
        cookie_prefix = self.cookie_name + "="
        drop = ctx.consumed or ()
        for name, value in headers.items():
            low = name.lower()
            if (
                low in HOP_BY_HOP
                or low in FORWARDING
                or low.startswith(POP_PREFIX)
                or low in conn
                or low in CONSUMED
                or low in drop
            ):
                continue
            if low == "authorization" and value[:4].lower() in ("pop ", "pop-"):
                continue  # popgate's own credential is not the origin's business
            if low == "cookie" and cookie_prefix in value:
                value = _drop_cookie(value, cookie_prefix)
                if not value:
                    continue
            out.append((name, value))
        peer = str(request.remote or "")
        prior = ",".join(headers.getall("X-Forwarded-For", ())) if self.trusted else ""
        out.append(("X-Forwarded-For", f"{prior}, {peer}" if prior else peer))
        proto = headers.get("X-Forwarded-Proto") if self.trusted else None
        out.append(("X-Forwarded-Proto", proto or request.scheme))
        out.append(("X-Forwarded-Host", headers.get("Host", "")))
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
        if is_upgrade(request):
            return await self.websockets.forward(request, self._ws_headers(ctx))
        pre = getattr(request, "_read_bytes", None)  # a body a verifier already read
        if pre is not None:
            body: AsyncIterator[bytes] | None = _once(pre) if request.body_exists else None
        else:
            body = self._body(request) if request.body_exists else None
        try:
            upstream = await self.upstream.send(
                request.method, request.raw_path, self.request_headers(ctx), body
            )
        except BodyError as exc:
            raise exc.error from None
        try:
            return await self._respond(ctx, upstream)
        except BodyError as exc:
            raise exc.error from None
        finally:
            upstream.release()

    async def _body(self, request: web.BaseRequest) -> AsyncIterator[bytes]:
        limit = self.limits.max_body_bytes
        seen = 0
        try:
            async for chunk in request.content.iter_chunked(CHUNK):
                seen += len(chunk)
                if seen > limit:
                    raise BodyError(PayloadTooLarge(f"body over {limit} bytes"))
                yield chunk
        except aiohttp.http_exceptions.HttpProcessingError as exc:
            raise BodyError(BadRequest(f"request body: {exc}", reason="bad_body")) from None
        except (ConnectionResetError, asyncio.IncompleteReadError) as exc:
            raise BodyError(BadRequest(f"request body: {exc}", reason="bad_body")) from None

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
        out.append(("Via", self.via))
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


def _drop_cookie(header: str, prefix: str) -> str:
    return "; ".join(p for p in (c.strip() for c in header.split(";")) if p and not p.startswith(prefix))
