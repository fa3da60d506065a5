"""One-round-trip vouchers on Redis (gateway.payments.voucher_cas): the same
decisions as the locked path, exactly-once charging across gateways, one
group-committed round trip per voucher."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from popgate.gateway.payments.channels import ChannelBook
from popgate.gateway.payments.voucher_cas import FastVouchers
from popgate.gateway.payments.vouchers import VoucherDesk
from popgate.gateway.stores import open_store
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.x402 import parse_payment_signature
from tests.support.batch import Payer, header, offer
from tests.support.channel_chain import ChannelChain

PRICE = 1000


def gateways(redis_url: str, chain: ChannelChain, n: int = 2) -> list[FastVouchers]:
    out = []
    for _ in range(n):
        store = open_store(redis_url, timeout=5.0)
        out.append(FastVouchers(VoucherDesk(ChannelBook(store), chain), store))  # type: ignore[arg-type]
    return out


async def close(gws: list[FastVouchers]) -> None:
    for g in gws:
        await g.store.close()


async def charge(gw: FastVouchers, req: Any, payload: dict[str, Any]) -> int:
    begun = await gw.charge(parse_payment_signature(header(req, payload)), [req], time.time())
    return begun.decision.charged_after


async def test_vouchers_charge_in_one_round_trip_and_replays_are_refused(redis_url: str) -> None:
    chain, req, payer = ChannelChain(), offer(PRICE), Payer()
    (gw,) = gateways(redis_url, chain, 1)
    try:
        assert await charge(gw, req, payer.sdk_payload(req)) == PRICE  # deposit: the locked path
        forged = payer.voucher(req, 2 * PRICE)  # right channel and amount, another wallet's signature
        forged["voucher"]["signature"] = Payer(0x12).voucher(req, 2 * PRICE, channel=payer.channel_id(req))[
            "voucher"
        ]["signature"]
        with pytest.raises(VerificationError, match="voucher_signature"):
            await charge(gw, req, forged)
        before = gw.store.group.round_trips
        for n in range(2, 6):
            assert await charge(gw, req, payer.voucher(req, n * PRICE)) == n * PRICE
        # the record was read once (for the forged voucher): each voucher is one round trip
        assert gw.store.group.round_trips - before == 4
        for replay in (payer.voucher(req, 5 * PRICE), payer.voucher(req, 4 * PRICE)):
            with pytest.raises(VerificationError, match="cumulative_amount_mismatch"):
                await charge(gw, req, replay)
        with pytest.raises(VerificationError, match="exceeds_balance"):  # the deposit was 5x the price
            await charge(gw, req, payer.voucher(req, 6 * PRICE))
        rec = await gw.desk.book.get(payer.channel_id(req))
        assert rec is not None and rec["charged"] == rec["smax"] == str(5 * PRICE)
        assert rec["sig"] == payer.voucher(req, 5 * PRICE)["voucher"]["signature"].lower()
    finally:
        await close([gw])


async def test_a_stale_cache_never_decides(redis_url: str) -> None:
    """Gateway A cached the channel; B charges and then a refund lowers the
    balance: A accepts the next voucher in sequence and refuses one above the
    new balance, both on the store's record."""
    chain, req, payer = ChannelChain(), offer(PRICE), Payer()
    a, b = gateways(redis_url, chain)
    try:
        await charge(a, req, payer.sdk_payload(req))
        assert await charge(a, req, payer.voucher(req, 2 * PRICE)) == 2 * PRICE
        assert await charge(b, req, payer.voucher(req, 3 * PRICE)) == 3 * PRICE
        assert await charge(a, req, payer.voucher(req, 4 * PRICE)) == 4 * PRICE  # A's copy said 2
        with pytest.raises(VerificationError, match="cumulative_amount_mismatch"):
            await charge(b, req, payer.voucher(req, 4 * PRICE))  # B's copy said 3: re-read, a replay
        # a partial refund through B leaves 4 of the 5 deposited... minus what the chain pays back
        await charge(b, req, payer.voucher(req, 4 * PRICE, kind="refund") | {"amount": "500"})
        assert chain.view(payer.channel_id(req)).balance == 5 * PRICE - 500
        with pytest.raises(VerificationError, match="exceeds_balance"):
            await charge(a, req, payer.voucher(req, 5 * PRICE))  # A's copy still had the old balance
    finally:
        await close([a, b])


async def test_a_held_lock_is_busy_and_an_expired_one_loses_its_commit(redis_url: str) -> None:
    chain, req, payer = ChannelChain(), offer(PRICE), Payer()
    (gw,) = gateways(redis_url, chain, 1)
    try:
        await charge(gw, req, payer.sdk_payload(req))
        now = time.time()
        held = await gw.desk.begin(
            parse_payment_signature(header(req, payer.voucher(req, 2 * PRICE))), [req], now
        )
        with pytest.raises(VerificationError, match="channel_busy"):
            await charge(gw, req, payer.voucher(req, 2 * PRICE))
        # the lock's holder died: once it expired, a voucher goes through and the
        # late holder can no longer commit its (now stale) charged total
        rec = await gw.desk.book.get(payer.channel_id(req))
        assert rec is not None
        await gw.store.client.hset(gw.desk.book._key(payer.channel_id(req)), "pexp", "1")
        assert await charge(gw, req, payer.voucher(req, 2 * PRICE)) == 2 * PRICE
        assert not await gw.desk.finish(held, True, now)
        assert await charge(gw, req, payer.voucher(req, 3 * PRICE)) == 3 * PRICE
        rec = await gw.desk.book.get(payer.channel_id(req))
        assert rec is not None and rec["charged"] == str(3 * PRICE) and "pend" not in rec
    finally:
        await close([gw])


async def test_fifty_concurrent_vouchers_over_two_gateways_are_charged_once(redis_url: str) -> None:
    """50 vouchers in flight at once on one channel over two gateways (own
    Redis clients, own caches), each built on the charged total last seen:
    the charged total equals exactly the sum of the accepted vouchers."""
    chain, req, payer = ChannelChain(), offer(PRICE, min_deposit=10**12), Payer()
    gws = gateways(redis_url, chain)
    try:
        await charge(gws[0], req, payer.sdk_payload(req))
        accepted: list[int] = []
        refused: dict[str, int] = {}

        async def one(i: int) -> None:
            rec = await gws[i % 2].desk.book.get(payer.channel_id(req))
            seen = int(rec["charged"]) if rec else 0
            try:
                accepted.append(await charge(gws[i % 2], req, payer.voucher(req, seen + PRICE)))
            except VerificationError as exc:
                refused[exc.reason] = refused.get(exc.reason, 0) + 1

        for _round in range(3):
            await asyncio.gather(*(one(i) for i in range(50)))
        rec = await gws[1].desk.book.get(payer.channel_id(req))
        assert rec is not None
        assert sorted(accepted) == [PRICE * k for k in range(2, len(accepted) + 2)]
        assert int(rec["charged"]) == int(rec["smax"]) == PRICE * (1 + len(accepted))
        assert set(refused) <= {
            "invalid_batch_settlement_evm_channel_busy",
            "invalid_batch_settlement_evm_cumulative_amount_mismatch",
        }
        assert len(accepted) >= 3 and len(accepted) + sum(refused.values()) == 150
    finally:
        await close(gws)


async def test_garbage_leaves_nothing_in_the_store(redis_url: str) -> None:
    """Vouchers for a channel that is not ours, or never opened, are refused
    and write nothing (a read creates no record)."""
    chain, req, payer = ChannelChain(), offer(PRICE), Payer()
    (gw,) = gateways(redis_url, chain, 1)
    try:
        foreign = offer(PRICE, delay=1800)  # another withdrawDelay: another channel config
        with pytest.raises(VerificationError, match="withdraw_delay_mismatch"):
            await charge(gw, req, payer.voucher(foreign, 2 * PRICE))
        with pytest.raises(VerificationError, match="exceeds_balance"):
            await charge(gw, req, payer.voucher(req, 2 * PRICE))  # never deposited
        assert await gw.store.client.keys("*chan*") == []
    finally:
        await close([gw])
