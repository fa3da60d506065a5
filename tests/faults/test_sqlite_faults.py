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


async def test_sqlite_locked_by_another_writer_fails_closed_without_pile_up(
    upstream, gateway_factory, http, tmp_path
):
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
            asyncio.gather(
                *(_hit(http, url_of(gw, "/"), {"Authorization": f"PoP {budgeted}"}) for _ in range(40))
            ),
            asyncio.gather(
                *(_hit(http, url_of(gw, "/"), {"Authorization": f"PoP {plain}"}) for _ in range(10))
            ),
        )
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
    gw = await gateway_factory(
        upstream, store=f"sqlite:///{db}", extra='[store.failure_mode]\nbudget = "open"\n'
    )
    budgeted = session_token(gw, budget=1000)
    assert (await _hit(http, url_of(gw, "/"), {"Authorization": f"PoP {budgeted}"}))[0] == 200
    # reopen the same file read-only (as after a remount ro / a permissions change)
    from popgate.gateway.stores.sqlite import SQLiteStore

    ro = SQLiteStore(f"file:{db}?mode=ro")
    ro._connect = lambda: sqlite3.connect(
        f"file:{db}?mode=ro",
        uri=True,
        isolation_level=None,  # type: ignore[method-assign]
        check_same_thread=False,
    )
    gw.gateway.session_scheme.store = ro
    rows = [await _hit(http, url_of(gw, "/"), {"Authorization": f"PoP {budgeted}"}) for _ in range(5)]
    assert [s for s, *_ in rows] == [200] * 5
    reg = gw.gateway.metrics.registry
    assert sample(reg, "popgate_fail_open_total", {"action": "budget"}) == 5
    await ro.close()


async def test_new_store_file_waits_for_another_writer_instead_of_failing(tmp_path):
    """Switching a new store file to WAL does not go through SQLite's busy handler
    (it fails at once while another connection writes): popgate retries it within
    the store timeout, so workers opening one file together do not fail their first
    requests (it did: a 500 on the first puzzle spend of a two-worker gateway)."""
    from popgate.gateway.stores.sqlite import SQLiteStore

    db = tmp_path / "store.db"
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("CREATE TABLE other (x)")
    locker.execute("BEGIN IMMEDIATE")
    locker.execute("INSERT INTO other VALUES (1)")
    asyncio.get_running_loop().call_later(0.3, locker.execute, "COMMIT")
    store = SQLiteStore(str(db), timeout=3.0)
    try:
        t0 = time.monotonic()
        assert await store.claim("pg:{x:1}", 60) is True
        assert 0.25 <= time.monotonic() - t0 < 2.5, "waited for the writer, then went on"
        assert await store.claim("pg:{x:1}", 60) is False
        assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        await store.close()
        locker.close()


async def test_puzzle_submission_with_the_store_locked_is_503_and_spends_nothing(
    upstream, gateway_factory, http, tmp_path
):
    """POST /.well-known/popgate/puzzle while the store is locked: 503
    store_unavailable with Retry-After (the spend fails closed; before, the
    StoreUnavailable escaped as a 500), and the same solution buys its session
    once the store is back: nothing was spent by the failed attempt."""
    from popgate.verifiers import puzzle
    from tests.gateway.schemes.puzzle_support import puzzle_extra, way

    db = tmp_path / "store.db"
    gw = await gateway_factory(upstream, store=f"sqlite:///{db}", extra=puzzle_extra(tmp_path))
    async with http.get(url_of(gw, "/v1/x"), headers={"Accept": "application/json"}) as r:
        assert r.status == 402
        p = way(await r.json(), "puzzle")
    nonces, _ = await asyncio.to_thread(puzzle.solve, p["challenge"], p["bits"], p["subs"])
    body = {"solution": f"{p['challenge']}:{','.join(nonces)}"}
    submit = url_of(gw, "/.well-known/popgate/puzzle")
    locker = sqlite3.connect(db, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    try:
        async with http.post(submit, json=body) as r:
            assert r.status == 503
            assert (await r.json())["reason"] == "store_unavailable"
            assert r.headers.get("Retry-After")
    finally:
        locker.execute("ROLLBACK")
        locker.close()
    reg = gw.gateway.metrics.registry
    assert sample(reg, "popgate_store_errors_total", {"action": "spend"}) == 1
    async with http.post(submit, json=body) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["token"]
    async with http.post(submit, json=body) as r:
        assert r.status == 403
