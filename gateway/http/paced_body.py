"""A proxied request body, read at a minimum rate.

The first ``[limits] request_buffer`` bytes (64 KiB) are read *before* an upstream
connection is taken (:func:`prebuffer`): a body that small (most are) is sent
whole, so an upstream connection is held only while the origin works. A longer
body is then streamed (:func:`paced`). Either way the body must keep up a
minimum average rate: by ``body_grace + n / body_min_rate`` seconds after the
body was first awaited, its first ``n`` bytes must have arrived. A client that
drips (a byte every two seconds) gets 408 ``body_too_slow`` before the origin is
contacted, or, once streaming, its connection cut. ``request_buffer = 0``: no
buffering (full duplex, as for a client that streams and reads the echo at once);
the rate still applies.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from popgate.gateway.errors import BadRequest, BodyTimeout, GatewayError, PayloadTooLarge
from popgate.gateway.http.upstream import BodyError
from popgate.gateway.ops.config import Limits

CHUNK = 64 * 1024


class Pace:
    """The clock of one body: when its next bytes are due."""

    __slots__ = ("grace", "rate", "seen", "start")

    def __init__(self, limits: Limits) -> None:
        self.start = asyncio.get_running_loop().time()
        self.grace, self.rate = limits.body_grace, float(limits.body_min_rate)
        self.seen = 0

    def remaining(self) -> float:
        due = self.start + self.grace + (self.seen / self.rate if self.rate > 0 else float("inf"))
        return due - asyncio.get_running_loop().time()


async def _next(request: web.BaseRequest, pace: Pace, limit: int, want: int) -> bytes:
    """Up to ``want`` more bytes (b"" at the end); GatewayError when too slow, too long or broken."""
    left = pace.remaining()
    if left <= 0:
        raise BodyTimeout(f"{pace.seen} body bytes, below the minimum rate", reason="body_too_slow")
    try:
        async with asyncio.timeout(left):
            chunk = await request.content.read(want)
    except TimeoutError:
        raise BodyTimeout(f"{pace.seen} body bytes, below the minimum rate", reason="body_too_slow") from None
    except aiohttp.http_exceptions.HttpProcessingError as exc:
        raise BadRequest(f"request body: {exc}", reason="bad_body") from None
    except (ConnectionResetError, asyncio.IncompleteReadError) as exc:
        raise BadRequest(f"request body: {exc}", reason="bad_body") from None
    pace.seen += len(chunk)
    if pace.seen > limit:
        raise PayloadTooLarge(f"body over {limit} bytes")
    return chunk


async def prebuffer(request: web.BaseRequest, limits: Limits) -> tuple[bytes, bool, Pace]:
    """The body's first ``request_buffer`` bytes, whether that was all of it, and its pace."""
    pace = Pace(limits)
    parts: list[bytes] = []
    size, cap = 0, limits.request_buffer
    while size < cap:
        chunk = await _next(request, pace, limits.max_body_bytes, cap - size)
        if not chunk:
            return b"".join(parts), True, pace
        parts.append(chunk)
        size += len(chunk)
    return b"".join(parts), False, pace


async def paced(request: web.BaseRequest, first: bytes, pace: Pace, limits: Limits) -> AsyncIterator[bytes]:
    """``first``, then the rest of the body at the minimum rate (BodyError when not)."""
    if first:
        yield first
    try:
        while chunk := await _next(request, pace, limits.max_body_bytes, CHUNK):
            yield chunk
    except GatewayError as exc:
        raise BodyError(exc) from None
