"""The forward-auth listener's own answers, and the bytes of the gateway's
(gateway/http/auth_listener.py): problem+json refusals it writes itself, the
``Date`` header, and :func:`encode` for an answer the gateway made."""

from __future__ import annotations

import json
import time
from email.utils import formatdate

from aiohttp import web

_SKIP = frozenset({"content-length", "connection", "date", "transfer-encoding"})
_REASONS = {400: "Bad Request", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout"}
_REASONS |= {413: "Payload Too Large", 431: "Request Header Fields Too Large", 500: "Internal Server Error"}


def problem_bytes(status: int, reason: str, detail: str, keep_alive: bool = False) -> bytes:
    body = json.dumps(
        {
            "type": f"urn:popgate:problem:{reason}",
            "title": _REASONS[status],
            "status": status,
            "reason": reason,
            "detail": detail,
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/problem+json\r\n"
        f"Cache-Control: no-store\r\nServer: popgate\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode() + body


UNTRUSTED = problem_bytes(
    403, "untrusted_caller", "The forward-auth listener answers only the configured trusted proxies."
)
NOT_AUTH = problem_bytes(
    404, "no_such_endpoint", "This port answers forward-auth calls only.", keep_alive=True
)


class Last(bytes):
    """An answer the listener wrote itself, after which the connection closes."""


NOT_AUTH_CLOSE = Last(problem_bytes(404, "no_such_endpoint", "This port answers forward-auth calls only."))


class Refused(Exception):
    """A request the listener answers itself, then closes the connection."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.answer = problem_bytes(status, reason, detail)


class Clock:
    """The ``Date`` header, formatted once a second."""

    def __init__(self) -> None:
        self.second = -1
        self.value = ""

    def date(self) -> str:
        now = int(time.time())
        if now != self.second:
            self.second, self.value = now, formatdate(now, usegmt=True)
        return self.value


def encode(response: web.StreamResponse, keep_alive: bool, date: str, head: bool = False) -> bytes:
    """An answer's bytes: status line, headers, ``Content-Length``, body (``head``: not the body,
    the answer to a HEAD request).
    ValueError for what cannot be sent (a streamed answer; CR or LF in a header)."""
    if not isinstance(response, web.Response):
        raise ValueError("a streamed answer on the auth listener")
    body = response.body
    if body is None:
        body = b""
    elif not isinstance(body, bytes):
        raise ValueError("a non-bytes body")
    headers = h = response.headers
    if "Content-Length" in h or "Connection" in h or "Date" in h or "Transfer-Encoding" in h:  # written below
        items = [(k, v) for k, v in headers.items() if k.lower() not in _SKIP]
    else:
        items = list(headers.items())
    block = "\r\n".join(map(": ".join, items))
    breaks = max(len(items) - 1, 0)  # the joins': a CR or LF in a name or value adds to them
    if block.count("\n") != breaks or block.count("\r") != breaks:
        raise ValueError("CR or LF in a header")
    if block:
        block += "\r\n"
    extra = f"Content-Type: {response.content_type}\r\n" if body and "Content-Type" not in headers else ""
    text = (
        f"HTTP/1.1 {response.status} {response.reason}\r\n{block}{extra}Date: {date}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return text.encode("utf-8", "surrogateescape") + (b"" if head else body)


def malformed() -> Refused:
    return Refused(400, "malformed_request", "The request is not valid HTTP/1.1.")
