"""The anonymous part of a flood, raw: open-loop HTTP/1.1 on many connections at a fixed offered rate.

    python loadtests/raw_flood.py --url http://127.0.0.1:8080 --rate 30000 --duration 20
                                  [--conns 512] [--window 16] [--networks 256]
                                  [--max-requests N] [--out flood.json]

locust spends milliseconds of Python per request, so it cannot offer more than a
gateway answers; this driver can. Like a botnet, it keeps many connections
(``--conns``, 512) and does not wait: every ``TICK`` s one scheduler deals the
requests due at ``--rate`` round-robin to the connections, whether or not the
answers came back (an open loop). A connection never has more than ``--window``
(16) requests unanswered: past that, the schedule's requests are counted as *held
back* (offered, never sent: the gateway was not reading). So up to conns × window
requests wait *at the gateway* (each turn of its event loop reads every ready
connection), not in a few of the driver's own pipelines. A connection the gateway
closes is opened again at the next tick; what it had unanswered is counted *lost*.
Requests are ``GET /api/items/<n>`` with no credential, a flood user agent
and ``X-Forwarded-For`` from ``--networks`` client /24s (the gateway must trust
the driver as a proxy, as the flood stack does). Responses are counted by status
line; latency is from a request's write to its status line.

Bounded: ``--duration`` seconds and at most ``--max-requests`` requests sent.
Prints one JSON summary (and writes it to ``--out``): offered, sent, answered,
held back, lost, per-status counts, p50/p99 latency, a per-second series, and the
driver's own CPU (``cpu_share``: of one core; it shares the host with the gateway).
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import random
import re
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

TICK = 0.01
STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")
UAS = ("curl/8.5.0", "python-requests/2.32", "Go-http-client/1.1", "Scrapy/2.11", "")


@dataclass
class Counts:
    t0: float
    offered: int = 0
    sent: int = 0
    held: int = 0
    lost: int = 0  # sent on a connection that closed before answering
    status: collections.Counter[str] = field(default_factory=collections.Counter)
    latency: list[float] = field(default_factory=list)
    series: dict[int, collections.Counter[str]] = field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )

    def answered(self, code: str, now: float, took: float) -> None:
        self.status[code] += 1
        self.series[int(now - self.t0)][code] += 1
        if len(self.latency) < 200_000:
            self.latency.append(took)


def requests(host: str, networks: int, n: int = 4096) -> list[bytes]:
    """``n`` request heads to pick from: random paths, user agents and client networks."""
    rnd = random.Random(19)
    nets = [f"{rnd.randint(1, 223)}.{rnd.randint(0, 255)}.{rnd.randint(0, 255)}" for _ in range(networks)]
    out = []
    for _ in range(n):
        ip = f"{rnd.choice(nets)}.{rnd.randint(1, 254)}"
        out.append(
            f"GET /api/items/{rnd.randint(1, 10**9)} HTTP/1.1\r\nHost: {host}\r\n"
            f"User-Agent: {rnd.choice(UAS)}\r\nX-Forwarded-For: {ip}\r\nAccept: */*\r\n\r\n".encode()
        )
    return out


def scan(tail: bytes, chunk: bytes) -> tuple[list[str], bytes]:
    """The status codes of the response status lines in ``tail + chunk``, and the new tail
    (the bytes a status line split across reads may start in: never one already counted)."""
    buf = tail + chunk
    end = 0
    codes = []
    for m in STATUS.finditer(buf):
        end = m.end()
        codes.append(m.group(1).decode())
    return codes, buf[max(end, len(buf) - 16) :]


class Conn(asyncio.Protocol):
    """One connection: counts status lines as they arrive (a protocol, no task of its own)."""

    def __init__(self, counts: Counts, loop: asyncio.AbstractEventLoop) -> None:
        self.counts, self.loop = counts, loop
        self.transport: asyncio.Transport | None = None
        self.pending: collections.deque[float] = collections.deque()  # write time per unanswered request
        self.tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        codes, self.tail = scan(self.tail, data)
        now = self.loop.time()
        for code in codes:
            sent = self.pending.popleft() if self.pending else now
            self.counts.answered(code, now, now - sent)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.counts.lost += len(self.pending)
        self.pending.clear()
        self.tail = b""


class Flood:
    """``--conns`` connections and one scheduler: every ``TICK`` s the requests due are dealt
    round-robin to connections with room in their window (an open loop), the rest held back."""

    def __init__(self, args: argparse.Namespace, heads: list[bytes], counts: Counts) -> None:
        self.args, self.heads, self.counts = args, heads, counts
        self.loop = asyncio.get_running_loop()
        self.conns = [Conn(counts, self.loop) for _ in range(args.conns)]
        self.cursor = 0
        self.connecting: set[int] = set()

    async def connect(self, i: int) -> None:
        u = urlsplit(self.args.url)
        try:
            await self.loop.create_connection(lambda: self.conns[i], u.hostname, u.port or 80)
        except OSError:
            await asyncio.sleep(0.05)
        finally:
            self.connecting.discard(i)

    def reconnect(self, tasks: set[asyncio.Task[None]]) -> None:
        for i, c in enumerate(self.conns):
            if c.transport is None and i not in self.connecting:
                self.connecting.add(i)
                t = self.loop.create_task(self.connect(i))
                tasks.add(t)
                t.add_done_callback(tasks.discard)

    def deal(self, n: int, budget: list[int], now: float) -> None:
        """Send ``n`` requests, one per connection with room, round-robin; count the rest held."""
        conns, window, k = self.conns, self.args.window, len(self.conns)
        batches: dict[int, int] = {}
        tried = 0
        while n > 0 and budget[0] > 0 and tried < k:
            i = self.cursor
            self.cursor = (i + 1) % k
            c = conns[i]
            if c.transport is None or len(c.pending) + batches.get(i, 0) >= window:
                tried += 1
                continue
            tried = 0
            batches[i] = batches.get(i, 0) + 1
            n -= 1
            budget[0] -= 1
        self.counts.held += n
        for i, m in batches.items():
            c = conns[i]
            assert c.transport is not None
            c.transport.write(b"".join(random.choice(self.heads) for _ in range(m)))
            c.pending.extend([now] * m)
            self.counts.sent += m

    async def run(self, duration: float, budget: list[int]) -> None:
        tasks: set[asyncio.Task[None]] = set()
        self.reconnect(tasks)
        for _ in range(200):  # up to 2 s for the connections to open before the schedule starts
            if not self.connecting:
                break
            await asyncio.sleep(0.01)
        last = self.counts.t0 = self.loop.time()  # the schedule starts once the connections are open
        deadline = last + duration
        due = 0.0
        while (now := self.loop.time()) < deadline:
            due += (now - last) * self.args.rate
            last = now
            n = int(due)
            due -= n
            self.counts.offered += n
            self.deal(n, budget, now)
            self.reconnect(tasks)
            await asyncio.sleep(TICK)
        await asyncio.sleep(self.args.drain)  # let the last answers come in
        for c in self.conns:
            if c.transport is not None:
                c.transport.close()
        for t in tasks:
            t.cancel()


def summary(counts: Counts, duration: float) -> dict[str, Any]:
    lat = sorted(counts.latency)

    def pct(q: float) -> float | None:
        return round(1000 * lat[min(len(lat) - 1, int(q * len(lat)))], 1) if lat else None

    answered = sum(counts.status.values())
    return {
        "duration": duration,
        "offered": counts.offered,
        "offered_rps": round(counts.offered / duration),
        "sent": counts.sent,
        "held_back": counts.held,
        "answered": answered,
        "answered_rps": round(answered / duration),
        "lost": counts.lost,
        "status": dict(counts.status),
        "p50_ms": pct(0.5),
        "p99_ms": pct(0.99),
        "series": {str(t): dict(c) for t, c in sorted(counts.series.items())},
    }


async def flood(args: argparse.Namespace) -> dict[str, Any]:
    u = urlsplit(args.url)
    heads = requests(u.netloc, args.networks)
    loop = asyncio.get_running_loop()
    counts = Counts(t0=loop.time())
    await Flood(args, heads, counts).run(args.duration, [args.max_requests])
    return summary(counts, args.duration)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--rate", type=float, required=True, help="offered requests/s, all connections")
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--conns", type=int, default=512)
    ap.add_argument("--networks", type=int, default=256, help="client /24s the flood comes from")
    ap.add_argument("--window", type=int, default=16, help="unanswered requests per connection, at most")
    ap.add_argument("--max-requests", type=int, default=5_000_000)
    ap.add_argument("--drain", type=float, default=1.0, help="seconds to wait for answers at the end")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    try:
        import uvloop

        run = uvloop.run
    except ImportError:
        run = asyncio.run
    t0, r0 = time.time(), resource.getrusage(resource.RUSAGE_SELF)
    result = run(flood(args))
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.time() - t0
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    result["wall_seconds"] = round(wall, 1)
    result["cpu_seconds"] = round(cpu, 1)  # the driver's own CPU (user + system): it shares the host
    result["cpu_share"] = round(cpu / max(wall, 1e-6), 2)  # of one core
    text = json.dumps(result)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)
    print(json.dumps({k: v for k, v in result.items() if k != "series"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
