"""The embedded SQLite store runs out of space.

1. Under a real ``popgate`` process: the gateway subprocess gets a soft
``RLIMIT_FSIZE`` (SIGXFSZ ignored, so a write past the limit returns EFBIG /
a short write instead of killing the process): the store's WAL can grow to
the limit and no further, which SQLite reports as "database or disk is
full" / a write I/O error, exactly as on a full volume (SQLite retries the short write, so what it reports is
SQLITE_IOERR_WRITE "disk I/O error" with errno EFBIG). Raising the soft limit
from outside (``prlimit``) is "space returns".
2. In-process, the literal SQLITE_FULL ("database or disk is full"):
``PRAGMA max_page_count`` on the store's own connection caps the file at its
current size."""

from __future__ import annotations

import asyncio
import resource
import signal
import subprocess
import sys
import time
from collections import Counter

import aiohttp

from popgate.gateway.ops.config import load_config
from popgate.gateway.stores.base import StoreUnavailable
from popgate.gateway.stores.sqlite import SQLiteStore
from popgate.verifiers.session import SessionCodec
from tests.conftest import session_token, url_of
from tests.faults.support import sample, samples_from_text
from tests.support.servers import ROOT, wait_port_async, write_config

LIMIT = 192 * 1024  # bytes any one file of the gateway may grow to


def limited(soft: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of death
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, resource.RLIM_INFINITY))

    return preexec


async def test_sqlite_disk_full_fails_closed_and_recovers(upstream, tmp_path):
    """Budgeted sessions (each a store write) until the store's files hit the
    size limit: from then on 503 ``store_unavailable`` + Retry-After, each
    answered within a second (never a 500, never a hang), counted in
    ``popgate_store_errors_total{action="budget"}``; plain sessions keep
    getting 200; reads of the store still work (``/readyz``); once the limit
    is lifted the same budgeted sessions are served again, with no restart."""
    db = tmp_path / "store.db"
    path = write_config(tmp_path, upstream, store=f"sqlite:///{db}", way_in=True)
    cfg = load_config(path)
    pre = SQLiteStore(str(db))  # the schema exists before the limit applies
    await pre.ping()
    await pre.close()
    proc = subprocess.Popen(
        [sys.executable, "-m", "popgate.gateway", "run", "--config", str(path), "--log-level", "ERROR"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=limited(LIMIT),
    )
    codec = SessionCodec(cfg.sessions.keys, cfg.sessions.signing_kid)

    def token(**kw) -> str:
        return codec.issue(klass="human", subject="human:disk", now=time.time(), ttl=300, **kw)

    base = f"http://127.0.0.1:{cfg.listen.port}"
    admin = f"http://127.0.0.1:{cfg.admin.port}"
    try:
        await wait_port_async(cfg.listen.port)
        await wait_port_async(cfg.admin.port)
        async with aiohttp.ClientSession() as http:

            async def hit(tok: str) -> tuple[int, str | None, str | None, float]:
                t0 = time.monotonic()
                async with asyncio.timeout(5):
                    async with http.get(f"{base}/hello", headers={"Authorization": f"PoP {tok}"}) as r:
                        reason = (await r.json()).get("reason") if r.status >= 400 else None
                        return r.status, reason, r.headers.get("Retry-After"), time.monotonic() - t0

            kept = [token(budget=1000) for _ in range(3)]
            assert [(await hit(t))[0] for t in kept] == [200] * 3
            # Fill: a fresh budget row per request, ten at a time, until the
            # store refuses every write (bounded: at most 60 rounds).
            seen: list[tuple[int, str | None, str | None, float]] = []
            for _ in range(60):
                batch = await asyncio.gather(*(hit(token(budget=5)) for _ in range(10)))
                seen += batch
                if all(s == 503 for s, *_ in batch):
                    break
            statuses = Counter(s for s, *_ in seen)
            assert set(statuses) <= {200, 503}, statuses
            assert statuses[503] >= 10, f"the store never filled up: {statuses}"
            refused = [row for row in seen if row[0] == 503]
            assert all(r == "store_unavailable" and ra and int(ra) >= 1 for _, r, ra, _ in refused)
            assert max(dt for *_, dt in seen) < 1.5
            # Full: a write that fits in WAL space left by failed transactions
            # may still commit (SQLite reuses it, as on a real full volume);
            # anything else is refused the same way, never a 500.
            full = [await hit(t) for t in kept]
            assert {(s, r) for s, r, *_ in full} <= {(200, None), (503, "store_unavailable")}
            refused_total = statuses[503] + sum(s == 503 for s, *_ in full)
            plain = token()
            assert [(await hit(plain))[0] for _ in range(5)] == [200] * 5
            async with http.get(f"{admin}/readyz") as r:
                ready = r.status
            async with http.get(f"{admin}/metrics") as r:
                text = await r.text()
            errors = samples_from_text(text, "popgate_store_errors_total")
            assert errors.get((("action", "budget"),)) == refused_total, errors
            assert not samples_from_text(text, "popgate_fail_open_total")
            assert (
                sum(
                    v
                    for k, v in samples_from_text(text, "popgate_responses_total").items()
                    if ("code", "5xx") in k
                )
                == refused_total
            )  # 503s only
            assert ready == 200, "reads still work on a full disk"
            # Space returns: the same sessions are served again, same process.
            resource.prlimit(
                proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
            assert [(await hit(t))[0] for t in kept] == [200] * 3
            assert (await hit(token(budget=5)))[0] == 200
        assert proc.poll() is None, "the gateway survived the full disk"
    finally:
        proc.terminate()
        proc.wait(10)


async def test_sqlite_full_database_is_503_and_recovers(upstream, gateway_factory, http, tmp_path):
    """SQLITE_FULL itself: the store's connection may not grow the file by a
    page. New budget rows → 503 ``store_unavailable`` + Retry-After (the
    store says "database or disk is full"), plain sessions 200, each refusal
    counted; lifting the cap → served again."""
    gw = await gateway_factory(upstream, store=f"sqlite:///{tmp_path / 'store.db'}")
    store = gw.gateway.services.store
    assert (await store.incr("warm", 1, 60)) == 1

    def cap(conn, now):
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")

    await store._run(cap)
    statuses = []
    for i in range(400):  # fill the last free page(s); bounded
        async with http.get(
            url_of(gw, "/"),
            headers={"Authorization": f"PoP {session_token(gw, budget=5, subject=f'human:f{i}')}"},
        ) as r:
            body = await r.json() if r.status >= 400 else {}
            statuses.append((r.status, body.get("reason"), r.headers.get("Retry-After")))
        if statuses[-5:] == [(503, "store_unavailable", "2")] * 5:
            break
    assert {s for s, *_ in statuses} <= {200, 503}
    assert statuses[-1] == (503, "store_unavailable", "2"), statuses[-3:]
    try:
        await store.incr("one-more-row", 1, 60)
        raise AssertionError("the capped store accepted a new row")
    except StoreUnavailable as exc:
        assert "database or disk is full" in str(exc)
    plain = session_token(gw)
    for _ in range(3):
        async with http.get(url_of(gw, "/"), headers={"Authorization": f"PoP {plain}"}) as r:
            assert r.status == 200
    reg = gw.gateway.metrics.registry
    assert sample(reg, "popgate_store_errors_total", {"action": "budget"}) == sum(
        s == 503 for s, *_ in statuses
    )
    await store._run(lambda conn, now: conn.execute("PRAGMA max_page_count = 1073741823"))
    async with http.get(
        url_of(gw, "/"), headers={"Authorization": f"PoP {session_token(gw, budget=5)}"}
    ) as r:
        assert r.status == 200
