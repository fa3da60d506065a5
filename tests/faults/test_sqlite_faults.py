"""The embedded SQLite store locked by another process's writer, read-only,
and out of disk space (``RLIMIT_FSIZE`` in a real gateway process)."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter

from tests.conftest import session_token, url_of
from tests.faults.support import sample


async def _hit(http, url, headers):
    t0 = time.monotonic()
    async with http.get(url, headers=headers) as r:
        body = await r.json() if r.status >= 400 else {}
        return r.status, body.get("reason"), time.monotonic() - t0


async def test_sqlite_locked_by_another_writer_fails_closed_without_pile_up(upstream, gateway_factory, http, tmp_path):
    """Another connection holds BEGIN EXCLUSIVE on the store file for 3 s while
    40 budgeted requests arrive at once: each answers 503 store_unavailable
    within about the store timeout (no queue of busy-waits behind the one
    store thread), store-free sessions are served meanwhile, and the store
    works again as soon as the lock is gone."""
    db = tmp_path / "store.db"
    gw = await gateway_factory(upstream, store=f"sqlite:///{db}")
    budgeted = session_token(gw, budget=1000)
    plain = session_token(gw)
    assert (await _hit(http, url_of(gw, "/"), {"Authorization": f"PoP {budgeted}"}))[0] == 200
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        t0 = time.monotonic()
        locked, free = await asyncio.gather(
            asyncio.gather(*(_hit(http, url_of(gw, "/"), {"Authorization": f"PoP {budgeted}"})
                             for _ in range(40))),
            asyncio.gather(*(_hit(http, url_of(gw, "/"), {"Authorization": f"PoP {plain}"})
                             for _ in range(10))))
        took = time.monotonic() - t0
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    assert Counter((s, r) for s, r, _ in locked) == {(503, "store_unavailable"): 40}
    assert took < 3.0, f"requests queued behind the locked store for {took:.1f}s"
    assert all(s == 200 for s, *_ in free)
    assert max(dt for *_, dt in free) < 1.0
    reg = gw.gateway.metrics.registry
    assert sample(reg, "popgate_store_errors_total", {"action": "budget"}) == 40
    assert (await _hit(http, url_of(gw, "/"), {"Authorization": f"PoP {budgeted}"}))[0] == 200
    # The budget counted exactly the two served requests: refused ones cost nothing.
    raw = sqlite3.connect(db).execute("SELECT num FROM kv WHERE key LIKE 'pg:{budget:%'").fetchone()
    assert raw == (2,)


async def test_sqlite_read_only_file_fails_closed(upstream, gateway_factory, http, tmp_path):
    """The store file turns read-only under a running gateway (chmod + a
    reopened handle): store-bound requests get 503, never 500; fail-open
    actions pass and are counted."""
    db = tmp_path / "store.db"
    gw = await gateway_factory(upstream, store=f"sqlite:///{db}",
                               extra='[store.failure_mode]\nbudget = "open"\n')
    budgeted = session_token(gw, budget=1000)
    assert (await _hit(http, url_of(gw, "/"), {"Authorization": f"PoP {budgeted}"}))[0] == 200
    # reopen the same file read-only (as after a remount ro / a permissions change)
    from gateway.stores.sqlite import SQLiteStore
    ro = SQLiteStore(f"file:{db}?mode=ro")
    ro._connect = lambda: sqlite3.connect(f"file:{db}?mode=ro", uri=True, isolation_level=None,  # type: ignore[method-assign]
                                          check_same_thread=False)
    gw.gateway.session_scheme.store = ro
    rows = [await _hit(http, url_of(gw, "/"), {"Authorization": f"PoP {budgeted}"}) for _ in range(5)]
    assert [s for s, *_ in rows] == [200] * 5
    reg = gw.gateway.metrics.registry
    assert sample(reg, "popgate_fail_open_total", {"action": "budget"}) == 5
    await ro.close()
