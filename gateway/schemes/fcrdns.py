"""Forward-confirmed reverse DNS, asynchronous, cached and bounded.

:class:`DnsClient` asks the configured name servers (UDP, RFC 1035 wire format from
:mod:`verifiers.dns`, a random id per query, answers only from the server asked).
:class:`FcrDns` checks an address the way search engines tell site owners to: its PTR
name must end in one of the crawler's domains *and* that name must resolve back to the
same address. Results (yes and no) are cached per address with a TTL in a bounded
table; concurrent checks of one address share one lookup; at most ``concurrency``
lookups run at once and each check gives up after ``timeout`` seconds (an address that
cannot be confirmed in time is not confirmed, and not cached).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from popgate.verifiers import dns
from popgate.verifiers.crawlers import host_is_theirs
from popgate.verifiers.net import IPAddress, parse_ip

log = logging.getLogger("popgate.fcrdns")


class _Exchange(asyncio.DatagramProtocol):
    def __init__(self, server: tuple[str, int]) -> None:
        self.server = server
        self.reply: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if (str(addr[0]), int(addr[1])) == self.server and not self.reply.done():
            self.reply.set_result(data)

    def error_received(self, exc: Exception) -> None:
        if not self.reply.done():
            self.reply.set_exception(exc)


class DnsClient:
    """Ask ``servers`` (host, port) in turn; each try bounded by ``timeout`` seconds."""

    def __init__(self, servers: Sequence[tuple[str, int]], timeout: float) -> None:
        self.servers = list(servers)
        self.timeout = timeout

    async def resolve(self, name: str, qtype: int) -> list[str]:
        """The answers of ``qtype`` for ``name`` ([] for none); raises DnsError when no
        server gave a usable answer."""
        last: Exception = dns.DnsError(detail="no name server")
        for server in self.servers:
            try:
                return await self._ask(server, name, qtype)
            except (OSError, TimeoutError, dns.DnsError) as exc:
                last = exc
        raise dns.DnsError(detail=f"{name}: {last}")

    async def _ask(self, server: tuple[str, int], name: str, qtype: int) -> list[str]:
        qid = secrets.randbelow(0x10000)
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(lambda: _Exchange(server), remote_addr=server)
        try:
            transport.sendto(dns.query(qid, name, qtype))
            async with asyncio.timeout(self.timeout):
                data = await proto.reply
            return dns.parse_answer(data, qid, name, qtype)[0]
        finally:
            transport.close()


@dataclass(frozen=True, slots=True)
class FcrDnsSettings:
    servers: tuple[tuple[str, int], ...]
    timeout: float = 2.0  # a whole check (PTR, then forward lookups)
    concurrency: int = 16  # lookups in flight at once
    cache_ttl: float = 3600.0  # how long an answer (yes or no) is kept
    cache_size: int = 10000


class FcrDns:
    """``await verify(ip, domains)``: the confirmed host name, or None."""

    def __init__(
        self,
        settings: FcrDnsSettings,
        clock: Callable[[], float] = time.monotonic,
        client: DnsClient | None = None,
    ) -> None:
        self.settings = settings
        self.client = client or DnsClient(settings.servers, settings.timeout)
        self.clock = clock
        self._cache: OrderedDict[tuple[IPAddress, tuple[str, ...]], tuple[float, str | None]] = OrderedDict()
        self._inflight: dict[tuple[IPAddress, tuple[str, ...]], asyncio.Future[str | None]] = {}
        self._slots = asyncio.Semaphore(settings.concurrency)

    async def verify(self, ip: IPAddress, domains: tuple[str, ...]) -> str | None:
        """The PTR name of ``ip`` under ``domains`` that resolves back to ``ip``, or None."""
        key = (ip, domains)
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self.clock():
            return hit[1]
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            host = await self._check(ip, domains)
        except (TimeoutError, OSError, dns.DnsError) as exc:
            log.info("forward-confirmed reverse DNS gave no answer: %s", type(exc).__name__)
            host = None  # not confirmed in time: not cached either
        except BaseException:
            future.set_result(None)  # a cancelled check confirms nothing for those sharing it
            raise
        else:
            self._remember(key, host)
        finally:
            del self._inflight[key]
        future.set_result(host)
        return host

    async def _check(self, ip: IPAddress, domains: tuple[str, ...]) -> str | None:
        async with asyncio.timeout(self.settings.timeout):
            async with self._slots:
                names = await self.client.resolve(dns.reverse_name(ip), dns.PTR)
                for host in names[:4]:
                    if not host_is_theirs(host, domains):
                        continue
                    qtype = dns.A if ip.version == 4 else dns.AAAA
                    addresses = {parse_ip(a) for a in await self.client.resolve(host, qtype)}
                    if ip in addresses:
                        return host
        return None

    def _remember(self, key: tuple[IPAddress, tuple[str, ...]], host: str | None) -> None:
        cache = self._cache
        cache[key] = (self.clock() + self.settings.cache_ttl, host)
        cache.move_to_end(key)
        while len(cache) > self.settings.cache_size:
            cache.popitem(last=False)
