"""The store fails *after* the facilitator settled an x402 payment (the
overload run's 34 settled vs 31 served): the money has moved, so the
request is served (settle-before) or the top-up key and receipt handed out
(202 ``credit_pending``); the bookkeeping (receipt, record, credit) is
written once the store answers again, and nothing is served or settled twice.

The failure is real: another connection holds ``BEGIN EXCLUSIVE`` on the
SQLite store file from the moment the facilitator stand-in carries the
settle out until the client has its answer."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import sqlite3
from pathlib import Path

from eth_account import Account
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.http.utils import decode_payment_response_header
from x402.mechanisms.evm.exact import register_exact_evm_client

from popgate.gateway.stores.base import key
from tests.conftest import url_of
from tests.faults.support import durable_redis, sample
from tests.gateway.payments.test_credits import credits_gateway
from tests.gateway.payments.test_fees_x402 import paid_gateway, signed_header
from tests.gateway.payments.test_x402_multiprocess import counting_origin
from tests.support.facilitator import FacilitatorState, running


class Locker:
    """Holds the SQLite store file's write lock from another connection."""

    def __init__(self, db: Path) -> None:
        self.conn = sqlite3.connect(db, isolation_level=None)
        self.locked = False

    def lock(self) -> None:
        self.conn.execute("BEGIN EXCLUSIVE")
        self.locked = True

    def unlock(self) -> None:
        if self.locked:
            self.conn.execute("ROLLBACK")
            self.locked = False

    def close(self) -> None:
        self.unlock()
        self.conn.close()


def rail(gw):
    return next(e.x402 for e in gw.gateway.enforcers if getattr(e, "x402", None) is not None)


async def drained(queue, seconds: float = 5.0) -> None:
    """Wait until the settlement worker has written the deferred bookkeeping."""
    for _ in range(int(seconds / 0.05)):
        if not queue.followups:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"bookkeeping still deferred: {[w for w, _ in queue.followups]}")


def payer_and_nonce(header: str) -> tuple[str, str]:
    a = json.loads(base64.b64decode(header))["payload"]["authorization"]
    return a["from"], a["nonce"]


async def test_settled_then_store_locked_is_served_and_booked_later(gateway_factory, http, tmp_path):
    """Settle-before, the store locked right after the settle: 200 from the
    origin with PAYMENT-RESPONSE (not 503 store_unavailable); once the lock
    is gone the worker writes the receipt and drops the record; the same
    payment again is 402 ``nonce_reused``: one settlement, one origin hit."""
    db = tmp_path / "store.db"
    seen: list[str] = []
    locker = Locker(db)
    state = FacilitatorState(on_settled=locker.lock)
    try:
        async with running(state) as (fac, st), await counting_origin(seen) as oport:
            gw = await paid_gateway(
                gateway_factory, f"http://127.0.0.1:{oport}", fac, store=f"sqlite:///{db}"
            )
            header = await signed_header(url_of(gw, "/paid/x"))
            async with http.get(url_of(gw, "/paid/x"), headers={"PAYMENT-SIGNATURE": header}) as r:
                status, text, headers = r.status, await r.text(), r.headers
            queue = await rail(gw).queue()
            assert status == 200, text
            settle = decode_payment_response_header(headers["PAYMENT-RESPONSE"])
            assert settle.success and settle.transaction == st.settled[0]["transaction"]
            assert seen == ["10000"]
            assert queue.followups, "the receipt cannot have been written under the lock"
            assert (
                sample(gw.gateway.metrics.registry, "popgate_store_errors_total", {"action": "payment"}) == 0
            )
            deferred = sample(gw.gateway.metrics.registry, "popgate_settlement_deferred_writes", {})
            assert deferred == len(queue.followups) > 0

            locker.unlock()
            await drained(queue)
            assert sample(gw.gateway.metrics.registry, "popgate_settlement_deferred_writes", {}) == 0
            payer, nonce = payer_and_nonce(header)
            assert await queue.receipt("eip155:84532", payer, nonce) == settle.transaction
            assert await queue.pending() == []

            async with http.get(url_of(gw, "/paid/x"), headers={"PAYMENT-SIGNATURE": header}) as r:
                assert r.status == 402
                assert (await r.json())["reason"] == "payment_rejected"
            assert seen == ["10000"] and len(st.settled) == 1
    finally:
        locker.close()


async def test_record_left_by_a_dead_gateway_is_reconciled_not_resettled(gateway_factory, http, tmp_path):
    """The crash backstop: the deferred bookkeeping is lost (the process
    forgot it) while the store still holds the record written before the
    settle; a worker past the lease re-sends it, the facilitator answers
    "nonce already used", and the record is closed as settled: the receipt
    is written and no second transfer happens."""
    db = tmp_path / "store.db"
    seen: list[str] = []
    locker = Locker(db)
    state = FacilitatorState(on_settled=locker.lock)
    try:
        async with running(state) as (fac, st), await counting_origin(seen) as oport:
            gw = await paid_gateway(
                gateway_factory, f"http://127.0.0.1:{oport}", fac, store=f"sqlite:///{db}"
            )
            await rail(gw).worker.stop()
            header = await signed_header(url_of(gw, "/paid/x"))
            async with http.get(url_of(gw, "/paid/x"), headers={"PAYMENT-SIGNATURE": header}) as r:
                assert r.status == 200, await r.text()
            queue = await rail(gw).queue()
            queue.followups.clear()  # as if the gateway died with them
            locker.unlock()
            [item] = await queue.pending()
            # a lease later: the inline attempt's lease has expired
            await gw.gateway.services.store.delete(key("x402q", f"lease:{item.id}:0"))
            out = await queue.run_once(item.created + queue.lease + 1)
            assert out == [(item.id, "settled")]
            payer, nonce = payer_and_nonce(header)
            # written (the facilitator's "nonce already used" names no tx: the hash is its record)
            assert await queue.receipt("eip155:84532", payer, nonce) is not None
            assert await queue.pending() == [] and len(st.settled) == 1 and seen == ["10000"]
    finally:
        locker.close()


async def test_topup_settled_then_store_locked_gets_key_and_credit_later(gateway_factory, tmp_path):
    """The x402 credits top-up, the store locked right after the settle: 202
    with the new key, ``credit_pending`` and PAYMENT-RESPONSE (not 503); once
    the lock is gone the key works and holds exactly the paid amount."""
    db = tmp_path / "store.db"
    seen: list[str] = []
    locker = Locker(db)
    try:
        async with running(FacilitatorState()) as (fac, st), await counting_origin(seen) as oport:
            up = f"http://127.0.0.1:{oport}"
            r = await credits_gateway(gateway_factory, up, tmp_path, fac, store=f"sqlite:///{db}")
            st.on_settled = locker.lock
            client = x402Client()
            register_exact_evm_client(client, Account.from_key("0x" + "55" * 32))
            async with x402HttpxClient(client) as h:
                resp = await h.post(url_of(r, "/.well-known/popgate/credits/topup?amount=0.10"))
                assert resp.status_code == 202, resp.text
                got = resp.json()
                assert got["credit_pending"] is True and got["credited"] == 100_000
                assert decode_payment_response_header(resp.headers["PAYMENT-RESPONSE"]).success
                locker.unlock()
                await drained(await rail(r).queue())
                paid = await h.get(
                    url_of(r, "/paid/x"), headers={"Authorization": f"Bearer {got['api_key']}"}
                )
                assert paid.status_code == 200, paid.text
            assert await r.gateway.services.store.balance(got["account"]) == 90_000
            assert len(st.settled) == 1 and seen == ["10000"]
    finally:
        locker.close()


async def test_held_payment_settled_while_store_locked_keeps_its_one_request(gateway_factory, http, tmp_path):
    """A held payment (first settle unanswered: 503 ``settlement_pending``) is
    settled by the client's retry while the store is locked: whether another
    copy was served cannot be known, so this copy gets 503
    ``settlement_pending`` *with* the successful PAYMENT-RESPONSE; after the
    lock the same payment is served once, a further copy is 402."""
    db = tmp_path / "store.db"
    seen: list[str] = []
    locker = Locker(db)
    state = FacilitatorState(settle_mode="http500")
    try:
        async with running(state) as (fac, st), await counting_origin(seen) as oport:
            gw = await paid_gateway(
                gateway_factory, f"http://127.0.0.1:{oport}", fac, store=f"sqlite:///{db}"
            )
            await rail(gw).worker.stop()  # only the client's retries drive it
            header = await signed_header(url_of(gw, "/paid/x"))
            hdrs = {"PAYMENT-SIGNATURE": header}
            async with http.get(url_of(gw, "/paid/x"), headers=hdrs) as r:
                assert r.status == 503 and (await r.json())["reason"] == "settlement_pending"
            state.settle_mode, state.on_settled = "ok", locker.lock
            async with http.get(url_of(gw, "/paid/x"), headers=hdrs) as r:
                assert r.status == 503 and (await r.json())["reason"] == "settlement_pending"
                receipt = decode_payment_response_header(r.headers["PAYMENT-RESPONSE"])
                assert receipt.success and receipt.transaction == st.settled[0]["transaction"]
                assert "Retry-After" in r.headers
            assert seen == []
            state.on_settled = None
            locker.unlock()
            assert await (await rail(gw).queue()).catch_up() == 0  # the worker's next pass
            async with http.get(url_of(gw, "/paid/x"), headers=hdrs) as r:
                assert r.status == 200, await r.text()
            async with http.get(url_of(gw, "/paid/x"), headers=hdrs) as r:
                assert r.status == 402
            assert seen == ["10000"] and len(st.settled) == 1
    finally:
        locker.close()


async def test_topup_credit_survives_a_gateway_dying_during_the_outage(gateway_factory, tmp_path):
    """The top-up's settlement record carries the credit and the new key's
    hash: with the in-process bookkeeping lost (the gateway died while the
    store was locked), a worker past the lease closes the record as settled
    and credits the key exactly once; no second transfer."""
    db = tmp_path / "store.db"
    seen: list[str] = []
    locker = Locker(db)
    try:
        async with running(FacilitatorState()) as (fac, st), await counting_origin(seen) as oport:
            up = f"http://127.0.0.1:{oport}"
            r = await credits_gateway(gateway_factory, up, tmp_path, fac, store=f"sqlite:///{db}")
            await rail(r).worker.stop()
            st.on_settled = locker.lock
            client = x402Client()
            register_exact_evm_client(client, Account.from_key("0x" + "55" * 32))
            async with x402HttpxClient(client) as h:
                resp = await h.post(url_of(r, "/.well-known/popgate/credits/topup?amount=0.10"))
                assert resp.status_code == 202, resp.text
                got = resp.json()
                queue = await rail(r).queue()
                queue.followups.clear()  # as if the gateway died with them
                locker.unlock()
                store = r.gateway.services.store
                assert await store.balance(got["account"]) == 0
                [item] = await queue.pending()
                await store.delete(key("x402q", f"lease:{item.id}:0"))  # a lease later
                assert await queue.run_once(item.created + queue.lease + 1) == [(item.id, "settled")]
                assert await queue.run_once(item.created + queue.lease + 2) == []
                bearer = {"Authorization": f"Bearer {got['api_key']}"}
                paid = await h.get(url_of(r, "/paid/x"), headers=bearer)
                assert paid.status_code == 200, paid.text
            assert await store.balance(got["account"]) == 90_000
            assert len(st.settled) == 1 and seen == ["10000"]
    finally:
        locker.close()


async def test_settled_then_redis_frozen_is_served_and_booked_once(gateway_factory, http):
    """The same on Redis: redis-server frozen (SIGSTOP) right after the settle,
    thawed after the answer: 200 with PAYMENT-RESPONSE, bookkeeping written
    later, the same payment again 402, one settlement, one origin hit."""
    seen: list[str] = []
    with durable_redis() as redis:
        proc = redis.proc
        assert proc is not None
        frozen: list[bool] = []

        def freeze() -> None:
            proc.send_signal(signal.SIGSTOP)
            frozen.append(True)

        try:
            async with (
                running(FacilitatorState(on_settled=freeze)) as (fac, st),
                await counting_origin(seen) as op,
            ):
                gw = await paid_gateway(gateway_factory, f"http://127.0.0.1:{op}", fac, store=redis.url)
                header = await signed_header(url_of(gw, "/paid/x"))
                async with http.get(url_of(gw, "/paid/x"), headers={"PAYMENT-SIGNATURE": header}) as r:
                    status, text, headers = r.status, await r.text(), r.headers
                queue = await rail(gw).queue()
                assert status == 200, text
                settle = decode_payment_response_header(headers["PAYMENT-RESPONSE"])
                assert settle.success and seen == ["10000"] and queue.followups
                proc.send_signal(signal.SIGCONT)
                frozen.clear()
                await drained(queue)
                payer, nonce = payer_and_nonce(header)
                assert await queue.receipt("eip155:84532", payer, nonce) == settle.transaction
                assert await queue.pending() == []
                async with http.get(url_of(gw, "/paid/x"), headers={"PAYMENT-SIGNATURE": header}) as r:
                    assert r.status == 402
                assert seen == ["10000"] and len(st.settled) == 1
        finally:
            if frozen:
                proc.send_signal(signal.SIGCONT)
