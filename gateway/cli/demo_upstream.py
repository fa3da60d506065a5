"""A small origin server for ``make run`` and the tests.

Routes: ``/`` and anything else → JSON describing the request (including the
``PoP-*`` headers popgate set); ``/echo`` → the request body streamed back;
``/stream?size=N`` → N bytes streamed in chunks; ``/slow?delay=S`` → waits
S seconds first; ``/ws`` → WebSocket echo; ``/healthz``.
"""

from __future__ import annotations

import asyncio
import hashlib

from aiohttp import WSMsgType, web

CHUNK = 64 * 1024


async def describe(request: web.Request) -> web.Response:
    body = await request.read() if request.can_read_body else b""
    info = {
        "method": request.method,
        "path": request.path_qs,
        "target": request.raw_path,  # the request-target exactly as received
        "headers": {k: v for k, v in request.headers.items()},
        "pop": {k: v for k, v in request.headers.items() if k.lower().startswith("pop-")},
        "body_sha256": hashlib.sha256(body).hexdigest(),
        "body_length": len(body),
    }
    return web.json_response(info, headers={"Set-Cookie": "origin=1; Path=/"})


async def echo(request: web.Request) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    await resp.prepare(request)
    digest = hashlib.sha256()
    async for chunk in request.content.iter_chunked(CHUNK):
        digest.update(chunk)
        await resp.write(chunk)
    await resp.write_eof()
    return resp


async def stream(request: web.Request) -> web.StreamResponse:
    size = int(request.query.get("size", str(1024 * 1024)))
    resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
    if request.query.get("length") == "1":
        resp.content_length = size
    await resp.prepare(request)
    block = bytes(range(256)) * (CHUNK // 256)
    sent = 0
    while sent < size:
        piece = block[: min(CHUNK, size - sent)]
        await resp.write(piece)
        sent += len(piece)
    await resp.write_eof()
    return resp


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(float(request.query.get("delay", "1")))
    return web.json_response({"slept": float(request.query.get("delay", "1"))})


async def ws(request: web.Request) -> web.WebSocketResponse:
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if msg.type == WSMsgType.TEXT:
            await sock.send_str("echo:" + msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sock.send_bytes(msg.data)
    return sock


async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="hello", headers={"Content-Type": "text/plain"})


def make_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/stream", stream)
    app.router.add_get("/slow", slow)
    app.router.add_get("/ws", ws)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/hello", hello)
    app.router.add_route("*", "/{tail:.*}", describe)
    return app


def run(host: str, port: int) -> None:
    web.run_app(make_app(), host=host, port=port, access_log=None, print=None)


def main() -> None:
    import sys

    listen = sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:8000"
    host, _, port = listen.rpartition(":")
    run(host or "127.0.0.1", int(port))


if __name__ == "__main__":
    main()
