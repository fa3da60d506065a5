"""Raw HTTP/1.1 exchanges over loopback, for request lines no client library will send."""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from typing import Any


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]  # lower-case names (the last value wins)
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse(data: bytes) -> RawResponse:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        out, rest = b"", body
        while rest:
            size, _, rest = rest.partition(b"\r\n")
            n = int(size, 16)
            if n == 0:
                break
            out, rest = out + rest[:n], rest[n + 2 :]
        body = out
    return RawResponse(status, headers, body)


def request_bytes(line: str, headers: list[tuple[str, str]]) -> bytes:
    head = [line, *(f"{k}: {v}" for k, v in headers), "Connection: close", "", ""]
    return "\r\n".join(head).encode("utf-8")


async def exchange(port: int, data: bytes, timeout: float = 5.0) -> RawResponse:
    """Send ``data`` (a request with ``Connection: close``) and read the answer to EOF."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        out = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return parse(out)


def exchange_sync(port: int, data: bytes, timeout: float = 5.0) -> RawResponse:
    """The blocking twin of :func:`exchange` (for hypothesis tests driving a gateway in a thread)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return parse(b"".join(chunks))
