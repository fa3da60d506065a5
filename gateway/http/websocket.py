"""WebSocket upgrade pass-through: one upstream socket per client socket,
messages pumped both ways until either side closes."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from aiohttp import WSMsgType, web

from popgate.gateway.errors import UpstreamTimeout, UpstreamUnreachable
from popgate.gateway.http.headers import FORWARDING, HOP_BY_HOP, POP_PREFIX

log = logging.getLogger("popgate.websocket")
SKIP = (
    HOP_BY_HOP
    | FORWARDING
    | {
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
        "content-length",
    }
)


def is_upgrade(request: web.BaseRequest) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


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

    async def forward(self, request: web.BaseRequest, extra: list[tuple[str, str]]) -> web.StreamResponse:
        """Open the upstream socket first (so failures are 502/504), then the client's."""
        headers = [
            (k, v)
            for k, v in request.headers.items()
            if k.lower() not in SKIP and not k.lower().startswith(POP_PREFIX)
        ]
        headers += extra
        protocols = [
            p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()
        ]
        try:
            upstream = await self.session().ws_connect(
                self.base + request.raw_path,
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
        await client.prepare(request)
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
