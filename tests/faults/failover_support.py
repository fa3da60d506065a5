"""Two real gateway processes on one store URL, and a mixed load that records
every answer, for the failover and partition tests.

The load (:class:`Load`): prepaid-credit debits (``GET /paid/hello`` with an API key),
admin top-ups with unique refs, hashcash stamps and puzzle solutions each sent to
both gateways at once (and again later by :meth:`Load.replay`). :func:`check` asserts
what must hold whatever the store went through: only 200/402/503 (503 always
``store_unavailable`` with Retry-After), each stamp and solution served at most once,
and the credits ledger holds exactly the served debits and every acknowledged top-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from popgate.gateway.ops.config import load_config
from popgate.gateway.payments.ledger import reconcile
from popgate.gateway.stores.redis import RedisStore
from popgate.verifiers import hashcash, puzzle
from tests.support.servers import ROOT, free_port, wait_port_async, write_config

TOKEN = "f" * 40
PRICE = 1_000
JSON = {"Accept": "application/json"}


@dataclass
class Gateway:
    base: str
    admin: str
    proc: subprocess.Popen[bytes]


@contextlib.asynccontextmanager
async def two_gateways(tmp_path: Path, upstream: str, store: str) -> AsyncIterator[list[Gateway]]:
    """Two ``popgate`` processes (charging on /paid, the shipped policy elsewhere) on ``store``."""
    (tmp_path / "admin").write_text(TOKEN)
    (tmp_path / "p1").write_bytes(b"p" * 40)
    extra = f"""
[credits]
admin_token = {{ secret_file = "{tmp_path / "admin"}" }}
[puzzle]
keys = [{{kid = "p1", secret_file = "{tmp_path / "p1"}"}}]
[difficulty]
class_floor = {{unknown = 8, agent = 8}}
"""
    base = write_config(tmp_path, upstream, store=store, extra=extra).read_text()
    gws: list[Gateway] = []
    try:
        for i in range(2):
            listen, admin = free_port(), free_port()
            text = re.sub(r"^listen = .*$", f'listen = "127.0.0.1:{listen}"', base, flags=re.M)
            text = re.sub(r"^admin = .*$", f'admin = "127.0.0.1:{admin}"', text, flags=re.M)
            path = tmp_path / f"gw{i}.toml"
            path.write_text(text)
            load_config(path)
            log = (tmp_path / f"gw{i}.log").open("wb")
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "tests.support.paid_gateway",
                    str(path),
                    str(PRICE),
                    "--others-by-policy",
                ],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            gws.append(Gateway(f"http://127.0.0.1:{listen}", f"http://127.0.0.1:{admin}", proc))
        for g in gws:
            for url in (g.base, g.admin):
                await wait_port_async(int(url.rsplit(":", 1)[1]), timeout=20)
        yield gws
    finally:
        for g in gws:
            g.proc.terminate()
        for g in gws:
            try:
                g.proc.wait(10)
            except subprocess.TimeoutExpired:
                g.proc.kill()
                g.proc.wait(10)


@dataclass
class Row:
    start: float
    end: float
    status: int
    reason: str | None
    retry_after: str | None


@dataclass
class Load:
    http: aiohttp.ClientSession
    gws: list[Gateway]
    api_key: str = ""
    account: str = ""
    paid: list[Row] = field(default_factory=list)
    topups: dict[str, list[Row]] = field(default_factory=lambda: defaultdict(list))
    spends: dict[str, list[Row]] = field(default_factory=lambda: defaultdict(list))  # item -> answers
    items: dict[str, tuple[str, str]] = field(default_factory=dict)  # item -> (kind, wire)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def request(self, method: str, url: str, **kw: Any) -> Row:
        t0 = time.monotonic()
        try:
            async with self.http.request(method, url, timeout=aiohttp.ClientTimeout(total=10), **kw) as r:
                body = await r.read()
                reason = None
                if r.status >= 400 and r.content_type == "application/problem+json":
                    reason = (await r.json()).get("reason")
                elif r.status >= 500:
                    reason = body[:200].decode(errors="replace")
                return Row(t0, time.monotonic(), r.status, reason, r.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError) as exc:  # no answer at all: recorded, fails check()
            return Row(t0, time.monotonic(), 0, type(exc).__name__, None)

    async def open_account(self) -> None:
        async with self.http.post(
            self.gws[0].admin + "/admin/credits/keys",
            json={"amount": 10**12},
            headers={"Authorization": f"Bearer {TOKEN}"},
        ) as r:
            assert r.status == 201, await r.text()
            body = await r.json()
        self.api_key, self.account = body["api_key"], body["account"]

    async def paid_loop(self, i: int) -> None:
        auth = {"Authorization": f"Bearer {self.api_key}"}
        while not self.stop.is_set():
            self.paid.append(await self.request("GET", self.gws[i % 2].base + "/paid/hello", headers=auth))
            i += 1

    async def topup_loop(self) -> None:
        n = 0
        while not self.stop.is_set():
            ref = f"t{n}"
            url = f"{self.gws[n % 2].admin}/admin/credits/accounts/{self.account}/topup"
            auth = {"Authorization": f"Bearer {TOKEN}"}
            self.topups[ref].append(
                await self.request("POST", url, json={"amount": 7, "ref": ref}, headers=auth)
            )
            n += 1
            await asyncio.sleep(0.02)

    async def _spend(self, item: str) -> None:
        kind, wire = self.items[item]
        rows = await asyncio.gather(*(self._send(g, kind, wire) for g in self.gws))
        self.spends[item].extend(rows)

    async def _send(self, g: Gateway, kind: str, wire: str) -> Row:
        if kind == "stamp":
            return await self.request("GET", g.base + "/hello", headers={"X-Hashcash": wire, **JSON})
        return await self.request(
            "POST", g.base + "/.well-known/popgate/puzzle", json={"solution": wire}, headers=JSON
        )

    async def spend_loop(self, kind: str) -> None:
        n = 0
        while not self.stop.is_set():
            async with self.http.get(self.gws[n % 2].base + "/", headers=JSON) as r:
                ways = {w["kind"]: w for w in (await r.json()).get("ways_out", [])} if r.status == 402 else {}
            if kind == "stamp" and "hashcash" in ways:
                h = ways["hashcash"]
                wire, _ = await asyncio.to_thread(hashcash.mint, h["resource"], h["bits"], time.time())
            elif kind == "puzzle" and "puzzle" in ways:
                p = ways["puzzle"]
                nonces, _ = await asyncio.to_thread(puzzle.solve, p["challenge"], p["bits"], p["subs"])
                wire = f"{p['challenge']}:{','.join(nonces)}"
            else:
                await asyncio.sleep(0.05)
                continue
            item = f"{kind}{n}"
            self.items[item] = (kind, wire)
            await self._spend(item)
            n += 1
            await asyncio.sleep(0.05)

    def served(self) -> list[str]:
        return [item for item, rows in self.spends.items() if any(r.status == 200 for r in rows)]

    async def replay(self) -> None:
        """Send every item served so far once more to both gateways (must not be served)."""
        items = self.served()
        for i in range(0, len(items), 16):
            await asyncio.gather(*(self._spend(item) for item in items[i : i + 16]))

    def run(self) -> list[asyncio.Task[None]]:
        loops = [self.paid_loop(0), self.paid_loop(1), self.topup_loop()]
        loops += [self.spend_loop("stamp"), self.spend_loop("puzzle")]
        return [asyncio.create_task(c) for c in loops]

    def first_success_after(self, t: float) -> float | None:
        """Seconds from ``t`` to the end of the first paid request started after ``t`` and served."""
        ends = [r.end for r in self.paid if r.start > t and r.status == 200]
        return min(ends) - t if ends else None


def check_answers(load: Load, max_seconds: float = 5.0) -> Counter[int]:
    """Only 200/402/503, every 503 a ``store_unavailable`` with Retry-After, every
    answer within ``max_seconds``, nothing served twice; returns the paid requests'
    status counts."""
    rows = [
        *load.paid,
        *(r for rs in load.topups.values() for r in rs),
        *(r for rs in load.spends.values() for r in rs),
    ]
    statuses = Counter((r.status, r.reason) for r in rows)
    # (403 replayed: a puzzle solution submitted again)
    assert {s if s != 403 else (s, why) for s, why in statuses} <= {200, 402, 503, (403, "replayed")}, (
        statuses
    )
    for r in rows:
        if r.status == 503:
            assert r.reason == "store_unavailable" and r.retry_after, r
        assert r.end - r.start < max_seconds, f"an answer took {r.end - r.start:.1f}s: {r}"
    twice = {
        i: [r.status for r in rs] for i, rs in load.spends.items() if sum(r.status == 200 for r in rs) > 1
    }
    assert not twice, f"served more than once: {twice}"
    return Counter(r.status for r in load.paid)


async def check_ledger(load: Load, store_url: str, settle: float = 20.0) -> dict[str, int]:
    """The ledger reconciles, holds every acknowledged top-up, and exactly one
    unrefunded debit per served paid request (waiting for the gateways'
    compensation of 503'd debits to settle)."""
    served = sum(1 for r in load.paid if r.status == 200)
    acked = {f"admin:{ref}" for ref, rows in load.topups.items() if any(r.status == 200 for r in rows)}
    store = RedisStore(store_url, timeout=2.0)
    try:
        deadline = time.monotonic() + settle
        while True:
            entries = await store.ledger(load.account, limit=1_000_000)
            kinds = Counter(e.kind for e in entries)
            if kinds["debit"] - kinds["refund"] == served or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        reconcile(await store.balance(load.account), entries)
    finally:
        await store.close()
    missing = acked - {e.ref for e in entries}
    assert not missing, f"acknowledged top-ups lost: {sorted(missing)[:10]}"
    assert kinds["debit"] - kinds["refund"] == served, (dict(kinds), served)
    return {"served": served, "debits": kinds["debit"], "refunds": kinds["refund"], "topups": len(acked)}
