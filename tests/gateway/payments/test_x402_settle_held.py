"""x402 settle-before when the facilitator gives no answer: the payment is
held (record kept, nonce kept), the client is told 503 ``settlement_pending``
and its retry of the *same* payment is served exactly once when the
settlement went through, refused when it definitively failed, and a
different authorization reusing the nonce is refused throughout."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from x402.http.utils import (
    decode_payment_required_header,
    decode_payment_response_header,
    encode_payment_signature_header,
)

from popgate.gateway.payments.facilitator import FacilitatorClient, SettlementQueue
from popgate.gateway.stores.memory import MemoryStore
from tests.conftest import url_of
from tests.faults.test_identity_provider_faults import committed_facilitator
from tests.gateway.payments.test_credits import credits_gateway
from tests.gateway.payments.test_fees_x402 import KEY, paid_gateway, sdk, signed_header
from tests.gateway.payments.test_x402_multiprocess import counting_origin
from tests.support.facilitator import FacilitatorState, eip3009_typed_data, running


def rail(gw):
    return next(e.x402 for e in gw.gateway.enforcers if getattr(e, "x402", None) is not None)


async def get(http, gw, path: str, header: str) -> tuple[int, dict[str, Any], Any]:
    async with http.get(url_of(gw, path), headers={"PAYMENT-SIGNATURE": header}) as r:
        text = await r.text()
        body = json.loads(text) if r.content_type.endswith("json") else {"text": text}
        return r.status, body, r.headers


def error_of(headers) -> str | None:
    pr = json.loads(base64.b64decode(headers["PAYMENT-REQUIRED"]))
    return pr.get("error")


async def held_gateway(gateway_factory, origin: str, fac: str, *, worker: bool, **kw: str):
    gw = await paid_gateway(gateway_factory, origin, fac, **kw)
    if not worker:  # only the client's retries drive the held settlement
        await rail(gw).worker.stop()
    return gw


def same_nonce_other_authorization(header: str) -> str:
    """A validly signed authorization with the same nonce, another validBefore."""
    obj = json.loads(base64.b64decode(header))
    a, req = obj["payload"]["authorization"], obj["accepted"]
    a["validBefore"] = str(int(a["validBefore"]) - 1)
    typed = eip3009_typed_data(a, req)
    signed = Account.sign_message(encode_typed_data(full_message=typed), KEY)
    obj["payload"]["signature"] = "0x" + bytes(signed.signature).hex()
    return base64.b64encode(json.dumps(obj).encode()).decode()


async def test_held_payment_pending_then_retried_later_is_served_once(gateway_factory, http):
    """Facilitator down: 503 ``settlement_pending`` + Retry-After, nothing
    reaches the origin; a retry while it is still down: 503 again; once it is
    back, the retry probes it: 200 with PAYMENT-RESPONSE, one settlement, one
    origin hit; a third copy: 402 ``nonce_reused``."""
    seen: list[str] = []
    state = FacilitatorState(settle_mode="http500")
    async with running(state) as (fac, st), await counting_origin(seen) as oport:
        gw = await held_gateway(gateway_factory, f"http://127.0.0.1:{oport}", fac, worker=False)
        header = await signed_header(url_of(gw, "/paid/x"))
        for _ in range(2):
            status, body, headers = await get(http, gw, "/paid/x", header)
            assert (status, body["reason"]) == (503, "settlement_pending")
            assert int(headers["Retry-After"]) >= 1 and "same payment" in body["detail"]
        assert seen == [] and len(await (await rail(gw).queue()).pending()) == 1
        state.settle_mode = "ok"
        status, body, headers = await get(http, gw, "/paid/x", header)
        assert status == 200, body
        settle = decode_payment_response_header(headers["PAYMENT-RESPONSE"])
        assert settle.success and settle.transaction == st.settled[0]["transaction"]
        status, body, headers = await get(http, gw, "/paid/x", header)
        assert (status, error_of(headers)) == (402, "nonce_reused")
        assert len(st.settled) == 1 and seen == ["10000"]
        assert await (await rail(gw).queue()).pending() == []


async def test_held_payment_settled_by_the_worker_is_served_once(gateway_factory, upstream, http):
    """The worker settles the held record in the background (the SDK-like
    facilitator answers its re-send "nonce already used" after the lost
    settle went through): the retry is served from the receipt, once."""
    state = FacilitatorState(settle_mode="http500")
    async with running(state) as (fac, st):
        gw = await held_gateway(gateway_factory, upstream, fac, worker=True)
        header = await signed_header(url_of(gw, "/paid/x"))
        assert (await get(http, gw, "/paid/x", header))[0] == 503
        state.settle_mode = "ok"
        queue = await rail(gw).queue()
        for _ in range(100):
            if not await queue.pending():
                break
            await asyncio.sleep(0.05)
        assert await queue.pending() == [] and len(st.settled) == 1
        status, body, headers = await get(http, gw, "/paid/x", header)
        assert status == 200, body
        assert (
            decode_payment_response_header(headers["PAYMENT-RESPONSE"]).transaction
            == st.settled[0]["transaction"]
        )
        assert (await get(http, gw, "/paid/x", header))[0] == 402


async def test_held_payment_definitively_rejected_is_402(gateway_factory, upstream, http):
    """Facilitator down, then it rejects the settlement: the retry gets 402
    with PAYMENT-RESPONSE ``success: false`` and the reason, the record is in
    the dead letter, later copies stay 402; nothing reached the origin."""
    state = FacilitatorState(settle_mode="http500")
    async with running(state) as (fac, st):
        gw = await held_gateway(gateway_factory, upstream, fac, worker=False)
        header = await signed_header(url_of(gw, "/paid/x"))
        assert (await get(http, gw, "/paid/x", header))[0] == 503
        item = (await (await rail(gw).queue()).pending())[0]
        state.settle_mode = "fail"
        for _ in range(2):
            status, body, headers = await get(http, gw, "/paid/x", header)
            assert (status, error_of(headers)) == (402, "settlement_failed"), body
            settle = decode_payment_response_header(headers["PAYMENT-RESPONSE"])
            assert not settle.success and settle.error_reason == "transaction_failed"
        dead = await (await rail(gw).queue()).dead(item.id)
        assert dead is not None and dead.last_error == "transaction_failed"
        assert st.settled == []


async def test_same_nonce_other_signature_is_refused(gateway_factory, upstream, http):
    """While a payment is held, a validly signed *other* authorization with
    its nonce is 402 ``nonce_reused`` (the held record is not resumed for
    it); the held payment itself is then served."""
    state = FacilitatorState(settle_mode="http500")
    async with running(state) as (fac, st):
        gw = await held_gateway(gateway_factory, upstream, fac, worker=False)
        header = await signed_header(url_of(gw, "/paid/x"))
        assert (await get(http, gw, "/paid/x", header))[0] == 503
        other = same_nonce_other_authorization(header)
        state.settle_mode = "ok"
        status, _, headers = await get(http, gw, "/paid/x", other)
        assert (status, error_of(headers)) == (402, "nonce_reused")
        assert st.calls["settle"] == 1 and st.settled == []
        assert (await get(http, gw, "/paid/x", header))[0] == 200
        status, _, headers = await get(http, gw, "/paid/x", other)
        assert (status, error_of(headers)) == (402, "nonce_reused")
        assert len(st.settled) == 1


@pytest.mark.parametrize("backend", ["sqlite", "redis"])
async def test_concurrent_retries_at_two_gateways_serve_once(
    tmp_path: Path, gateway_factory, http, request, backend
):
    """Two gateways on one store (SQLite file / real Redis); a held payment
    retried 10 times at once, split between them: exactly one 200 and one
    origin hit; the others get 503 ``settlement_pending`` (another retry is
    probing) or 402."""
    seen: list[str] = []
    state = FacilitatorState(settle_mode="http500", latency=0.2)
    store = f"sqlite:///{tmp_path / 's.db'}" if backend == "sqlite" else request.getfixturevalue("redis_url")
    async with running(state) as (fac, st), await counting_origin(seen) as oport:
        origin = f"http://127.0.0.1:{oport}"
        gws = [await held_gateway(gateway_factory, origin, fac, worker=False, store=store) for _ in range(2)]
        header = await signed_header(url_of(gws[0], "/paid/x"))
        assert (await get(http, gws[0], "/paid/x", header))[0] == 503
        state.settle_mode = "ok"
        results = await asyncio.gather(*(get(http, gws[i % 2], "/paid/x", header) for i in range(10)))
        statuses = [s for s, _, _ in results]
        assert statuses.count(200) == 1, results
        assert all(s in (402, 503) for s in statuses if s != 200)
        assert seen == ["10000"] and len(st.settled) == 1
        for _ in range(3):  # later copies: never a second 200
            assert (await get(http, gws[1], "/paid/x", header))[0] == 402
        assert seen == ["10000"]


def _item_args(header: str) -> dict[str, Any]:
    obj = json.loads(base64.b64decode(header))
    a = obj["payload"]["authorization"]
    req = dict(obj["accepted"])
    return dict(
        payload=obj,
        requirements=req,
        payer=a["from"],
        network=req["network"],
        nonce=a["nonce"],
        valid_before=int(a["validBefore"]),
    )


async def test_queue_reads_nonce_used_as_settled_only_after_an_unanswered_send(gateway_factory, upstream):
    """SettlementQueue: "nonce already used" for a record whose earlier
    /settle got no answer → settled (receipt kept); the same answer to a
    first send (a replay of a spent authorization) stays a rejection."""
    async with running() as (fac, st), aiohttp.ClientSession() as s:
        gw = await paid_gateway(gateway_factory, upstream, fac)
        header = await signed_header(url_of(gw, "/paid/x"))
        client = FacilitatorClient(s, fac)
        now = float(_item_args(header)["valid_before"]) - 100
        # a replay: settled elsewhere first, then a fresh record → failed
        await client.settle(_item_args(header)["payload"], _item_args(header)["requirements"])
        q = SettlementQueue(MemoryStore(), client)
        fresh = await q.enqueue(now=now, **_item_args(header))
        outcome, res = await q.settle_now(fresh, now)
        assert outcome == "failed" and res is not None
        assert res.error_reason == "invalid_exact_evm_nonce_already_used"
        # the same answer after an unanswered send → settled
        q = SettlementQueue(MemoryStore(), client)
        item = await q.enqueue(now=now, **_item_args(header))
        item.ambiguous = True
        outcome, res = await q.settle_now(item, now)
        assert outcome == "settled" and res is not None and res.success
        assert await q.receipt(item.network, item.payer, item.nonce) is not None
        assert await q.pending() == [] and len(st.settled) == 1


async def test_idempotent_facilitator_reports_the_original_transaction(gateway_factory, upstream, http):
    """A facilitator that keeps its settlement records answers the re-send
    of a settled payment with its transaction: the held retry carries it."""
    state = FacilitatorState(latency=1.5, idempotent=True)
    async with committed_facilitator(state) as (fac, st):
        gw = await held_gateway(gateway_factory, upstream, fac, worker=False, settle_timeout="0.5")
        header = await signed_header(url_of(gw, "/paid/x"))
        assert (await get(http, gw, "/paid/x", header))[:2][0] == 503
        for _ in range(60):
            if st.settled:
                break
            await asyncio.sleep(0.05)
        state.latency = 0.0
        status, body, headers = await get(http, gw, "/paid/x", header)
        assert status == 200, body
        settle = decode_payment_response_header(headers["PAYMENT-RESPONSE"])
        assert settle.success and settle.transaction == st.settled[0]["transaction"]
        assert len(st.settled) == 1


async def test_held_topup_is_credited_once(gateway_factory, upstream, http, tmp_path):
    """The credits top-up endpoint (same rail: verify + settle_first): 503
    ``settlement_pending`` while the facilitator is down, then the same
    payment credits the account once; a further copy is 402."""
    state = FacilitatorState(settle_mode="http500")
    async with running(state) as (fac, st):
        gw = await credits_gateway(gateway_factory, upstream, tmp_path, fac)
        url = url_of(gw, "/.well-known/popgate/credits/topup?amount=0.10")
        async with http.post(url) as r:
            required = decode_payment_required_header(r.headers["PAYMENT-REQUIRED"])
        header = encode_payment_signature_header(await sdk().create_payment_payload(required))

        async def topup() -> tuple[int, dict[str, Any]]:
            async with http.post(url, headers={"PAYMENT-SIGNATURE": header}) as r:
                return r.status, await r.json(content_type=None)

        status, body = await topup()
        assert (status, body["reason"]) == (503, "settlement_pending")
        state.settle_mode = "ok"
        status, body = await topup()
        assert status == 200 and body["credited"] == 100_000 and body["balance"] == 100_000
        account = body["account"]
        status, body = await topup()
        assert status == 402 and body["error"] == "nonce_reused"
        assert await gw.gateway.services.store.balance(account) == 100_000
        assert len(st.settled) == 1
