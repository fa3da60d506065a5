"""The upstream hop behind one small interface.

:class:`AiohttpUpstream` uses one shared ``ClientSession`` (keep-alive pool,
no cookie jar so one client's cookies never reach another, no automatic
decompression). Lower-layer errors are translated here, once: connect
failures → :class:`UpstreamUnreachable` (502), timeouts →
:class:`UpstreamTimeout` (504).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Sequence
from typing import Protocol

import aiohttp
from yarl import URL

from popgate.gateway.errors import GatewayError, UpstreamTimeout, UpstreamUnreachable
from popgate.gateway.ops.config import Limits
from popgate.gateway.ops.config import Upstream as UpstreamConfig


class BodyError(Exception):
    """The client's request body broke (bad chunking, too large, reset)."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.detail)
        self.error = error


class UpstreamResponse(Protocol):
    """What the proxy reads of an upstream response (read-only: each client has its own class)."""

    @property
    def status(self) -> int: ...

    @property
    def reason(self) -> str | None: ...

    @property
    def headers(self) -> Sequence[tuple[str, str]]: ...

    async def read(self, limit: int) -> bytes: ...

    def iter_chunks(self) -> AsyncIterable[bytes]: ...

    def release(self) -> None: ...


class UpstreamClient(Protocol):
    async def send(
        self, method: str, target: str, headers: list[tuple[str, str]], body: AsyncIterable[bytes] | None
    ) -> UpstreamResponse:
        """Send a request; raise UpstreamUnreachable / UpstreamTimeout / BodyError."""
        ...

    async def close(self) -> None: ...


class _Response:
    __slots__ = ("_resp", "reason", "status")

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.reason = resp.reason

    @property
    def headers(self) -> Sequence[tuple[str, str]]:
        return [(k.decode("latin-1"), v.decode("latin-1")) for k, v in self._resp.raw_headers]

    async def read(self, limit: int) -> bytes:
        try:
            data = await self._resp.content.read(limit)
        except TimeoutError:
            raise UpstreamTimeout("reading response body") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(f"reading response body: {exc}") from None
        return data

    async def iter_chunks(self) -> AsyncIterable[bytes]:
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except TimeoutError:
            raise UpstreamTimeout("reading response body") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(f"reading response body: {exc}") from None

    def release(self) -> None:
        self._resp.release()


class AiohttpUpstream:
    """:class:`UpstreamClient` on a shared aiohttp ClientSession."""

    def __init__(self, upstream: UpstreamConfig, limits: Limits) -> None:
        self.base = upstream.url
        connector = aiohttp.TCPConnector(
            limit=limits.pool_size, keepalive_timeout=limits.keepalive_timeout, enable_cleanup_closed=True
        )
        self.session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=limits.connect_timeout, sock_read=limits.read_timeout
            ),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
        )

    async def send(
        self, method: str, target: str, headers: list[tuple[str, str]], body: AsyncIterable[bytes] | None
    ) -> UpstreamResponse:
        try:
            resp = await self.session.request(
                method,
                URL(self.base + target, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                compress=None,
                auto_decompress=False,
            )
        except BodyError:
            raise
        except TimeoutError:
            raise UpstreamTimeout("waiting for response headers") from None
        except aiohttp.ClientConnectorError as exc:
            raise UpstreamUnreachable(f"connect: {exc}") from None
        except aiohttp.ClientPayloadError as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, BodyError):
                raise cause from None
            raise UpstreamUnreachable(f"{type(exc).__name__}: {exc}") from None
        except (aiohttp.ClientError, OSError) as exc:
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, BodyError):
                raise cause from None
            raise UpstreamUnreachable(f"{type(exc).__name__}: {exc}") from None
        return _Response(resp)

    async def close(self) -> None:
        await self.session.close()
