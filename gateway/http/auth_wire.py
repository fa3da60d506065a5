"""The forward-auth listener's own answers, and the bytes of the gateway's
(gateway/http/auth_listener.py): problem+json refusals it writes itself, the
``Date`` header, and :func:`encode` for an answer the gateway made."""

from __future__ import annotations

import json
import time
from email.utils import formatdate
from typing import TypeVar

from aiohttp import web

E = TypeVar("E", bound="Encoded")
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


class Encoded(web.Response):
    """An answer that repeats, made whole once (popgate's own headers included): its status
    line and headers as bytes (``head``, from :meth:`fix`), which :func:`encode` writes as
    they are. Its headers must not change after :meth:`fix` (encode checks their number,
    and encodes anew if it changed); :meth:`again` makes the copies to send."""

    head = b""
    count = -1

    def fix(self: E) -> E:
        """Encode the status line and headers now (the answer has no body)."""
        self.head = _top(self, b"")
        self.count = len(self.headers)
        return self

    def again(self: E) -> E:
        """A fresh answer like this one (a response object is sent once), its bytes shared."""
        response = type(self)(status=self.status, headers=self.headers)
        response.head, response.count = self.head, self.count
        return response


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
    if isinstance(response, Encoded) and len(response.headers) == response.count and not body:
        top = response.head
    else:
        top = _top(response, body)
    connection = "keep-alive" if keep_alive else "close"
    tail = f"Date: {date}\r\nContent-Length: {len(body)}\r\nConnection: {connection}\r\n\r\n"
    return top + tail.encode() + (b"" if head else body)


def _top(response: web.Response, body: bytes) -> bytes:
    """The status line and the answer's own headers (``Content-Type`` added for a body
    that names none); ValueError for a CR or LF in a header."""
    headers = h = response.headers
    # written by encode itself:
    if "Content-Length" in h or "Connection" in h or "Date" in h or "Transfer-Encoding" in h:
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
    text = f"HTTP/1.1 {response.status} {response.reason}\r\n{block}{extra}"
    return text.encode("utf-8", "surrogateescape")


def malformed() -> Refused:
    return Refused(400, "malformed_request", "The request is not valid HTTP/1.1.")
