"""WebSocket upgrade pass-through: one upstream socket per client socket,
messages pumped both ways until either side closes.

:func:`check_handshake` runs before anything else touches an upgrade (no
charge, no upstream socket): a request with ``Upgrade: websocket`` must be a
valid RFC 6455 handshake (GET over HTTP/1.1, ``Connection: upgrade``,
``Sec-WebSocket-Version: 13``, a ``Sec-WebSocket-Key`` of 16 base64 bytes), else 400.
The request headers sent upstream are the HTTP path's
(:meth:`gateway.http.proxy.Forwarder.request_headers`: popgate's credentials
stripped by the same table) minus :data:`SKIP`, which the upstream handshake
makes itself.
"""

from __future__ import annotations

import asyncio
import binascii
import logging
from base64 import b64decode

import aiohttp
from aiohttp import WSMsgType, web
from yarl import URL

from popgate.gateway.errors import BadRequest, UpstreamTimeout, UpstreamUnreachable
from popgate.gateway.http.headers import connection_tokens

log = logging.getLogger("popgate.websocket")
# Made by the upstream handshake itself, never copied from the client's.
SKIP = frozenset(
    {
        "host",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "content-length",
    }
)


def is_upgrade(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").strip().lower() == "websocket"


def check_handshake(request: web.BaseRequest) -> None:
    """Raise a 400 unless ``request`` is a valid WebSocket opening handshake."""
    headers = request.headers
    problem = ""
    if request.method != "GET" or request.version < (1, 1):
        problem = "a WebSocket handshake is a GET over HTTP/1.1"
    elif "upgrade" not in connection_tokens(headers.getall("Connection", ())):
        problem = "Connection must name upgrade"
    elif headers.get("Sec-WebSocket-Version", "").strip() != "13":
        problem = "Sec-WebSocket-Version must be 13"
    else:
        try:
            if len(b64decode(headers.get("Sec-WebSocket-Key", "").strip(), validate=True)) != 16:
                problem = "Sec-WebSocket-Key must be 16 bytes"
        except (binascii.Error, ValueError):
            problem = "Sec-WebSocket-Key is not base64"
    if problem:
        raise BadRequest(f"websocket handshake: {problem}", reason="bad_websocket_handshake", public=problem)


class WebSocketProxy:
    """Proxies WebSocket upgrades to ``base`` (an http(s) origin URL)."""

    def __init__(self, base: str, connect_timeout: float) -> None:
        self.base = base
        self.timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
        return self._session

    async def forward(
        self,
        request: web.BaseRequest,
        target: str,
        headers: list[tuple[str, str]],
        response_headers: list[tuple[str, str]],
    ) -> web.StreamResponse:
        """Open the upstream socket first (so failures are 502/504), then the client's.

        ``target`` is the origin-form target, ``headers`` the cleaned request
        headers (without :data:`SKIP`), ``response_headers`` popgate's own for the 101.
        """
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        try:
            upstream = await self.session().ws_connect(
                URL(self.base + target, encoded=True),
                headers=headers,
                protocols=protocols,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=10),
                autoclose=False,
                autoping=True,
            )
        except TimeoutError:
            raise UpstreamTimeout("websocket connect") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UpstreamUnreachable(f"websocket connect: {exc}") from None
        client = web.WebSocketResponse(
            protocols=[upstream.protocol] if upstream.protocol else (), autoclose=False
        )
        client.headers.extend(response_headers)
        try:
            await client.prepare(request)
        except BaseException:
            await upstream.close()
            raise
        await asyncio.gather(_pump(client, upstream), _pump(upstream, client))
        return client

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


async def _pump(
    src: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
    dst: web.WebSocketResponse | aiohttp.ClientWebSocketResponse,
) -> None:
    try:
        async for msg in src:
            if msg.type == WSMsgType.TEXT:
                await dst.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await dst.send_bytes(msg.data)
            elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                break
    except (ConnectionError, RuntimeError) as exc:
        log.debug("websocket pump ended: %s", exc)
    finally:
        if not dst.closed:
            await dst.close()
