"""Verified search-engine crawlers as an evidence scheme.

A request whose User-Agent names a known crawler (Googlebot, Google's special
crawlers, Bingbot, Applebot, DuckDuckBot, YandexBot, Baiduspider) is checked against
where that crawler really comes from: the address ranges its operator publishes
(shipped in ``gateway/data/crawlers/``, re-read from a file or URL every ``refresh``
seconds by :class:`RangeRefresher`) or, with ``fcrdns = true``, forward-confirmed
reverse DNS (:mod:`gateway.schemes.fcrdns`). Confirmed: class ``verified-agent``, the
crawler's name as subject (``PoP-Subject: googlebot``) and ``crawler:<name>`` as the declared agent the
policy's ``declared_agent`` matches. Not confirmed: no class, and ``impostor_weight``
added to the request's policy weight (a crawler's name from an address not theirs).
The client address is the one ``[server] trusted_proxies`` lets popgate believe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import Any

from aiohttp import web

from popgate.gateway.pipeline.context import Attestation, Context
from popgate.gateway.registry import Registry, Services
from popgate.gateway.schemes.crawlers_config import CrawlerSettings
from popgate.gateway.schemes.fcrdns import FcrDns
from popgate.verifiers.crawlers import Crawler, RangeTable, UserAgents, parse_ranges
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.net import Network

log = logging.getLogger("popgate.crawlers")
MAX_RANGE_DOCUMENT = 4 * 1024 * 1024


class CrawlerScheme:
    """``User-Agent`` naming a crawler → ``verified-agent`` when the address is theirs."""

    name = "crawler"

    def __init__(self, settings: CrawlerSettings, fcrdns: FcrDns | None) -> None:
        self.user_agents = UserAgents(settings.crawlers)
        self.table = RangeTable(settings.ranges)  # replaced whole by the refresher
        self.fcrdns = fcrdns
        self.weight = settings.impostor_weight

    def extract(self, request: web.BaseRequest) -> Crawler | None:
        ua = request.headers.get("User-Agent")
        return self.user_agents.claimed(ua) if ua else None

    async def verify(self, ctx: Context, evidence: Any) -> Attestation:
        crawler: Crawler = evidence
        ip = ctx.client_ip
        how = "ranges"
        if self.table.lookup(ip) != crawler.name:
            host = None
            if self.fcrdns is not None and crawler.domains:
                host = await self.fcrdns.verify(ip, crawler.domains)
            if host is None:
                ctx.weight += self.weight
                raise VerificationError(
                    "crawler_unverified", f"{crawler.name} user agent, address not theirs"
                )
            how = "fcrdns"
        return Attestation(
            "verified-agent", crawler.name, self.name, extra=how, agent=f"crawler:{crawler.name}"
        )


class RangeRefresher:
    """Re-reads every range source (file or URL) every ``refresh`` seconds and swaps the
    scheme's table; a source that fails keeps its last good ranges."""

    def __init__(self, scheme: CrawlerScheme, settings: CrawlerSettings, services: Services) -> None:
        self.scheme = scheme
        self.sources = dict(settings.sources)
        self.ranges: dict[str, list[Network]] = dict(settings.ranges)
        self.interval = settings.refresh
        self.services = services
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        urls = any(s.startswith(("http://", "https://")) for s in self.sources.values())
        if self.interval > 0 or urls:
            self._task = asyncio.create_task(self._run(first=0.0 if urls else self.interval))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self, first: float) -> None:
        await asyncio.sleep(first)
        while True:
            await self.refresh()
            if self.interval <= 0:
                return
            await asyncio.sleep(self.interval)

    async def refresh(self) -> int:
        """Re-read every source now; returns how many succeeded."""
        ok = 0
        for name, source in self.sources.items():
            try:
                self.ranges[name] = parse_ranges(json.loads(await self._read(source)), name)
                ok += 1
            except (OSError, ValueError, VerificationError, TimeoutError) as exc:
                log.warning("crawler ranges for %s not refreshed from %s: %s", name, source, exc)
        self.scheme.table = RangeTable(self.ranges)
        return ok

    async def _read(self, source: str) -> bytes:
        if not source.startswith(("http://", "https://")):
            return await asyncio.to_thread(Path(source).read_bytes)
        http = await self.services.outbound()
        async with http.get(source) as resp:
            if resp.status != 200:
                raise OSError(f"HTTP {resp.status}")
            body = await resp.content.read(MAX_RANGE_DOCUMENT + 1)
        if len(body) > MAX_RANGE_DOCUMENT:
            raise ValueError("range document too large")
        return body


def crawlers_extension(registry: Registry, services: Services) -> None:
    """Register the crawler scheme and its refresher from the validated ``[crawlers]``."""
    settings = services.config.features.crawlers
    if settings is None:
        return
    fcrdns = FcrDns(settings.fcrdns) if settings.fcrdns is not None else None
    scheme = CrawlerScheme(settings, fcrdns)
    registry.schemes.append(scheme)
    registry.background.append(RangeRefresher(scheme, settings, services))
