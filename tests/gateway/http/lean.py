"""Helpers for the forward-auth listener tests (test_auth_listener*.py): a gateway config
with the lean listener on, the forward-auth headers, and raw client connections read answer
by answer."""

from __future__ import annotations

import asyncio
from typing import Any

from popgate.gateway.http.forward_auth import AUTH_PATH
from popgate.gateway.http.server import Running
from tests.conftest import session_token
from tests.gateway.http.raw import RawResponse, parse
from tests.support.servers import free_port

AUTH = AUTH_PATH
TRUST = 'trusted_proxies = ["127.0.0.1/32"]'
ANSWER_TIMEOUT = 10.0  # seconds to wait for any answer: a hang fails the test, never blocks it


def listen_extra(trusted: str = TRUST) -> str:
    """``[server]`` lines: trusted proxies and the lean listener on a free port."""
    return f'{trusted}\nauth_listen = "127.0.0.1:{free_port()}"'


def lean_port(running: Running) -> int:
    assert running.auth is not None
    return int(running.auth.addresses[0][1])


def main_port(running: Running) -> int:
    return int(running.proxy.addresses[0][1])


def forwarded(uri: str = "/api/x?q=1", method: str = "GET", **extra: str) -> dict[str, str]:
    """The headers Traefik's forwardAuth and Caddy's forward_auth send (and the nginx config sets)."""
    return {
        "X-Forwarded-Method": method,
        "X-Forwarded-Proto": "https",
        "X-Forwarded-Host": "api.example",
        "X-Forwarded-Uri": uri,
        "X-Forwarded-For": "203.0.113.7",
        **extra,
    }


def with_header(name: str, value: str) -> dict[str, str]:
    return {**forwarded(), name: value}


def human_session(gw: Running, **kw: Any) -> str:
    return session_token(gw, "human", subject="human:abc", **kw)


SUB = {"X-Popgate-Auth": "subrequest"}  # nginx's auth subrequest
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}  # a browser


class Conn:
    """One client connection, read answer by answer (Content-Length framed)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self, timeout: float = ANSWER_TIMEOUT, *, head_only: bool = False) -> RawResponse:
        """The next answer; ``head_only``: the answer to a HEAD request (no body follows)."""
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        if head_only:
            return parse(head)
        length = int(parse(head).headers.get("content-length", "0"))
        body = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return parse(head + body)

    async def eof(self, timeout: float = ANSWER_TIMEOUT) -> bool:
        """True when the server closes the connection (nothing more arrives) within ``timeout``."""
        try:
            rest = await asyncio.wait_for(self.reader.read(), timeout)
        except ConnectionResetError:
            rest = b""
        finally:
            self.writer.close()
        return rest == b""


def call_bytes(
    headers: Any, path: str = AUTH, method: str = "GET", body: bytes = b"", close: bool = False
) -> bytes:
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    lines = [f"{method} {path} HTTP/1.1", "Host: popgate.internal", *(f"{k}: {v}" for k, v in pairs)]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    if close:
        lines.append("Connection: close")
    return ("\r\n".join([*lines, "", ""])).encode() + body
