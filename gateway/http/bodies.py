"""Reading the small request bodies popgate's own endpoints take: bounded, and
never a 500 for bytes a client chose."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from popgate.gateway.errors import BadRequest, PayloadTooLarge


async def read_bounded(request: web.BaseRequest, limit: int, what: str) -> bytes:
    """The whole body, at most ``limit`` bytes; raises PayloadTooLarge (413)."""
    if (request.content_length or 0) > limit:
        raise PayloadTooLarge(f"{what} body", public="Request body too large.")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise PayloadTooLarge(f"{what} body", public="Request body too large.")
    return raw


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
