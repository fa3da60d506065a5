"""Reading the small request bodies popgate's own endpoints take: whole however the client's
bytes arrive (one TCP segment or many), bounded in size and time, and never a 500 for bytes
a client chose."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from popgate.gateway.errors import BadRequest, BodyTimeout, PayloadTooLarge

BODY_DEADLINE = 10.0  # seconds for a whole endpoint body (they are a few KiB at most)


async def read_bounded(
    request: web.BaseRequest, limit: int, what: str, deadline: float | None = None
) -> bytes:
    """The whole body up to its end, at most ``limit`` bytes, within ``deadline`` seconds
    (default :data:`BODY_DEADLINE`).

    Raises PayloadTooLarge (413) past ``limit`` (declared or sent) and BodyTimeout (408) when
    the body has not arrived by the deadline. ``content.read(n)`` returns what is buffered, so
    it is called until the end of the body.
    """
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"{what} body", public="Request body too large.")
    deadline = BODY_DEADLINE if deadline is None else deadline
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline):
            while True:
                chunk = await request.content.read(limit + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"{what} body", public="Request body too large.")
    except TimeoutError:
        raise BodyTimeout(f"{what} body: {size} bytes in {deadline} s") from None
    return b"".join(chunks)


def parse_json_object(raw: bytes, what: str, hint: str, reason: str = "bad_request") -> dict[str, Any]:
    """Decode a JSON object; raises BadRequest (400) with ``hint`` as the public text."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise BadRequest(f"{what} body", reason=reason, public=hint)
    return data


async def read_json_object(
    request: web.BaseRequest, limit: int, what: str, hint: str, reason: str = "bad_request"
) -> dict[str, Any]:
    """:func:`read_bounded` then :func:`parse_json_object`."""
    return parse_json_object(await read_bounded(request, limit, what), what, hint, reason)
