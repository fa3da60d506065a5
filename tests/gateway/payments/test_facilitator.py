"""Facilitator client and the durable settlement queue, against the local
test facilitator over loopback (which checks signatures with eth-account)."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest

from popgate.gateway.payments.facilitator import (
    FacilitatorClient,
    FacilitatorError,
    SettlementQueue,
    map_invalid_reason,
)
from popgate.gateway.stores.memory import MemoryStore
from tests.fixtures.x402.cases import CASES, NOW, PAYER
from tests.support.facilitator import FacilitatorState, running


def body(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    c = CASES[name]
    payload = json.loads(base64.b64decode(c["header_value"]))
    net = payload["accepted"]["network"]
    return payload, next(r for r in c["requirements"] if r["network"] == net)


async def test_supported() -> None:
    """/supported lists exact on both Base networks for v1 and v2, and upto (v2) with the
    facilitatorAddress an upto witness binds to."""
    async with running() as (url, _), aiohttp.ClientSession() as s:
        sup = await FacilitatorClient(s, url).supported()
        assert sup.supports("exact", "eip155:84532") and sup.supports("exact", "eip155:8453", 1)
        assert sup.supports("upto", "eip155:84532") and not sup.supports("upto", "eip155:84532", 1)
        upto = next(k for k in sup.kinds if k.scheme == "upto")
        assert upto.extra == {"facilitatorAddress": "0x" + "fa" * 20}
        assert not sup.supports("batch-settlement", "eip155:84532")


@pytest.mark.parametrize(
    "name,reason",
    [
        ("p01_sepolia", None),
        ("n01_amount", "invalid_exact_evm_payload_authorization_value_mismatch"),
        ("n08_other_signer", "invalid_exact_evm_payload_signature"),
        ("n12_wrong_domain_name", "invalid_exact_evm_payload_signature"),
        ("n14_high_s", "invalid_exact_evm_payload_signature"),
        ("n04_expired", "invalid_exact_evm_payload_authorization_valid_before"),
    ],
)
async def test_verify_second_opinion(name: str, reason: str | None) -> None:
    """The independent facilitator agrees with our verdicts on the fixtures."""
    async with running(FacilitatorState(clock=lambda: NOW)) as (url, _), aiohttp.ClientSession() as s:
        r = await FacilitatorClient(s, url).verify(*body(name))
        assert r.is_valid is (reason is None) and r.invalid_reason == reason
        assert r.payer == PAYER


async def test_http_400_with_verify_body_is_a_result() -> None:
    """CDP-style 400 + isValid:false is read as a rejection, not a transport error."""
    st = FacilitatorState(clock=lambda: NOW, verify_mode="reject400")
    async with running(st) as (url, _), aiohttp.ClientSession() as s:
        r = await FacilitatorClient(s, url).verify(*body("n08_other_signer"))
        assert not r.is_valid and map_invalid_reason(r.invalid_reason) == "bad_signature"


@pytest.mark.parametrize(
    "mode,reason", [("http500", "facilitator_unavailable"), ("hang", "facilitator_timeout")]
)
async def test_transport_errors(mode: str, reason: str) -> None:
    """5xx and timeouts raise FacilitatorError with a stable reason."""
    async with (
        running(FacilitatorState(clock=lambda: NOW, settle_mode=mode)) as (url, _),
        aiohttp.ClientSession() as s,
    ):
        with pytest.raises(FacilitatorError) as e:
            await FacilitatorClient(s, url, settle_timeout=0.3).settle(*body("p01_sepolia"))
        assert e.value.reason == reason


async def test_unreachable() -> None:
    async with aiohttp.ClientSession() as s:
        with pytest.raises(FacilitatorError) as e:
            await FacilitatorClient(s, "http://127.0.0.1:9").verify(*body("p01_sepolia"))
        assert e.value.reason == "facilitator_unavailable"


async def enqueue(q: SettlementQueue, name: str = "p01_sepolia") -> Any:
    payload, req = body(name)
    a = payload["payload"]["authorization"]
    return await q.enqueue(
        payload=payload,
        requirements=req,
        payer=a["from"],
        network=req["network"],
        nonce=a["nonce"],
        valid_before=int(a["validBefore"]),
        now=NOW,
    )


async def test_settle_now_success_removes_record() -> None:
    """Inline settle: record written first, removed on success, receipt kept."""
    store = MemoryStore()
    async with running(FacilitatorState(clock=lambda: NOW)) as (url, st), aiohttp.ClientSession() as s:
        q = SettlementQueue(store, FacilitatorClient(s, url))
        item = await enqueue(q)
        assert [i.id for i in await q.pending()] == [item.id]
        outcome, res = await q.settle_now(item, NOW)
        assert outcome == "settled" and res is not None and res.success
        assert await q.pending() == []
        assert await q.receipt(item.network, PAYER, item.nonce) == res.transaction
        assert st.settled[0]["value"] == "10000"


async def test_settlement_pending_reconciles_without_rebroadcast() -> None:
    """settlement_pending → the same payload is re-sent and reconciles to one settlement."""
    st = FacilitatorState(clock=lambda: NOW, settle_mode="pending", pending_rounds=2)
    async with running(st) as (url, _), aiohttp.ClientSession() as s:
        q = SettlementQueue(MemoryStore(), FacilitatorClient(s, url), backoff=1.0)
        item = await enqueue(q)
        outcome, res = await q.settle_now(item, NOW)  # two tries inline, both pending
        assert outcome == "pending" and res is not None and res.error_reason == "settlement_pending"
        assert (await q.pending())[0].transaction == res.transaction
        assert await q.run_once(NOW + 10) == [(item.id, "settled")]
        assert len(st.settled) == 1 and st.settled[0]["transaction"] == res.transaction


async def test_transport_error_backs_off_and_survives_restart() -> None:
    """Facilitator down: the record stays, backs off, and a new queue object
    on the same store (a restarted gateway) settles it later."""
    store = MemoryStore()
    st = FacilitatorState(clock=lambda: NOW, settle_mode="http500")
    async with running(st) as (url, _), aiohttp.ClientSession() as s:
        q = SettlementQueue(store, FacilitatorClient(s, url), backoff=2.0)
        item = await enqueue(q)
        assert (await q.settle_now(item, NOW))[0] == "retry"
        assert await q.run_once(NOW + 1) == []  # not due before the backoff
        assert await q.run_once(NOW + 2) == [(item.id, "retry")]
        assert (await q.pending())[0].next_at == NOW + 2 + 4  # 2 s, then 4 s
        st.settle_mode = "ok"
        q2 = SettlementQueue(store, FacilitatorClient(s, url))
        assert await q2.run_once(NOW + 6) == [(item.id, "settled")]
        assert len(st.settled) == 1


async def test_terminal_failure_goes_to_dead_letter() -> None:
    """A terminal rejection moves the record to dead:<id>, with the reason."""
    st = FacilitatorState(clock=lambda: NOW, settle_mode="fail")
    async with running(st) as (url, _), aiohttp.ClientSession() as s:
        q = SettlementQueue(MemoryStore(), FacilitatorClient(s, url))
        item = await enqueue(q)
        assert (await q.settle_now(item, NOW))[0] == "failed"
        assert await q.pending() == []
        dead = await q.dead(item.id)
        assert dead is not None and dead.last_error == "transaction_failed"


async def test_gives_up_after_valid_before_without_tx() -> None:
    """Transport errors past validBefore (no tx broadcast) are dead-lettered."""
    async with aiohttp.ClientSession() as s:
        q = SettlementQueue(MemoryStore(), FacilitatorClient(s, "http://127.0.0.1:9"))
        item = await enqueue(q)
        assert await q.run_once(item.valid_before + 1) == [(item.id, "failed")]
        assert (await q.dead(item.id)) is not None


async def test_concurrent_workers_settle_once() -> None:
    """Three workers racing over the same queue: each item is attempted once."""
    store = MemoryStore()
    st = FacilitatorState(clock=lambda: NOW, latency=0.05)
    async with running(st) as (url, _), aiohttp.ClientSession() as s:
        q = SettlementQueue(store, FacilitatorClient(s, url))
        items = [await enqueue(q, n) for n in ("p01_sepolia", "p03_second_offer")]
        workers = [SettlementQueue(store, FacilitatorClient(s, url)) for _ in range(3)]
        runs = await asyncio.gather(*(w.run_once(NOW) for w in workers))
        outcomes = sorted(o for r in runs for o in r)
        assert [o for o in outcomes if o[1] == "settled"] == [(i.id, "settled") for i in items]
        assert st.calls["settle"] == 2 and len(st.settled) == 2


async def test_tail_hint_advances() -> None:
    """Finished items are skipped: the tail hint moves past them."""
    store = MemoryStore()
    async with running(FacilitatorState(clock=lambda: NOW)) as (url, _), aiohttp.ClientSession() as s:
        q = SettlementQueue(store, FacilitatorClient(s, url))
        first = await enqueue(q)
        await q.settle_now(first, NOW)
        second = await enqueue(q, "p03_second_offer")
        assert [i.id for i in await q.pending()] == [second.id]
        from popgate.gateway.stores.base import key

        assert await store.get(key("x402q", "tail")) == str(second.id).encode()


async def test_v1_payment_verifies_and_settles_with_v1_requirements() -> None:
    """A v1 X-PAYMENT goes to the facilitator with PaymentRequirementsV1 shape."""
    from x402.schemas.v1 import PaymentRequirementsV1

    from popgate.verifiers.x402 import Requirements

    c = CASES["p04_v1_x_payment"]
    payload = json.loads(base64.b64decode(c["header_value"]))
    req = Requirements.from_json(c["requirements"][0]).for_facilitator(1, "http://x/y")
    v1 = PaymentRequirementsV1.model_validate(req)
    assert v1.network == "base-sepolia" and v1.max_amount_required == "10000"
    async with running(FacilitatorState(clock=lambda: NOW)) as (url, st), aiohttp.ClientSession() as s:
        client = FacilitatorClient(s, url)
        assert (await client.verify(payload, req)).is_valid
        res = await client.settle(payload, req)
        assert res.success and st.settled[0]["network"] == "eip155:84532"


# Where the independent facilitator (like the SDK's) and our offline verifier
# are expected to disagree: it has no cap on validBefore, and it only knows
# settled nonces, not ones our store reserved.
DIVERGENT = {"n07_too_far_ahead", "n15_replay"}
SIGNED = [
    n
    for n, c in CASES.items()
    if c["expect"]["reason"] not in ("malformed", "wrong_network", "unsupported_scheme")
    and c["header_name"] == "PAYMENT-SIGNATURE"
]


@pytest.mark.parametrize("name", SIGNED)
async def test_table_second_opinion(name: str) -> None:
    """Over the whole signed fixture table, eth-account's verdict equals ours
    (except the documented divergences)."""
    async with running(FacilitatorState(clock=lambda: NOW)) as (url, _), aiohttp.ClientSession() as s:
        payload, _req = body(name)
        offer = CASES[name]["requirements"][-1] if name != "p02_base_mainnet" else _req
        r = await FacilitatorClient(s, url).verify(payload, offer)
        ours = CASES[name]["expect"]["valid"]
        assert r.is_valid is (ours if name not in DIVERGENT else True), r.invalid_reason
