"""Channel records on memory, SQLite and Redis: busy lock, exact charging."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from popgate.gateway.payments.channels import ChannelBook
from popgate.gateway.payments.vouchers import VoucherDesk
from popgate.gateway.stores import open_store
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.x402 import parse_payment_signature
from tests.support.batch import Payer, header, offer
from tests.support.channel_chain import ChannelChain

PRICE = 1000


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def store_url(request: Any, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/s.db"
    else:
        yield request.getfixturevalue("redis_url")


async def pay(
    desk: VoucherDesk, req: Any, payload: dict[str, Any], served: bool = True, hold: float = 0
) -> int:
    begun = await desk.begin(parse_payment_signature(header(req, payload)), [req], time.time())
    await asyncio.sleep(hold)
    assert await desk.finish(begun, served, time.time())
    return begun.decision.charged_after


async def test_deposit_vouchers_refund_and_replays(store_url: str) -> None:
    store, chain = open_store(store_url, timeout=5.0), ChannelChain()
    desk, req, payer = VoucherDesk(ChannelBook(store), chain), offer(PRICE), Payer()
    try:
        assert await pay(desk, req, payer.sdk_payload(req)) == PRICE
        for n in range(2, 6):
            assert await pay(desk, req, payer.voucher(req, n * PRICE)) == n * PRICE
        for replay in (payer.voucher(req, 5 * PRICE), payer.voucher(req, 4 * PRICE)):
            with pytest.raises(VerificationError, match="cumulative_amount_mismatch"):
                await pay(desk, req, replay)
        with pytest.raises(VerificationError, match="exceeds_balance"):  # deposit was 5x the price
            await pay(desk, req, payer.voucher(req, 6 * PRICE))
        top_up = payer.voucher(req, 6 * PRICE, kind="deposit") | {
            "deposit": payer.sdk_payload(req)["deposit"]
        }
        # an origin failure releases without charging (the deposit stays on chain); then it works
        assert await pay(desk, req, top_up, served=False) == 6 * PRICE
        assert chain.view(payer.channel_id(req)).balance == 10 * PRICE
        assert await pay(desk, req, payer.voucher(req, 6 * PRICE)) == 6 * PRICE
        assert await pay(desk, req, payer.voucher(req, 6 * PRICE, kind="refund")) == 6 * PRICE
        assert chain.view(payer.channel_id(req)).balance == 6 * PRICE
        rec = await desk.book.get(payer.channel_id(req))
        assert rec is not None and rec["charged"] == str(6 * PRICE) and "pend" not in rec
    finally:
        await store.close()


async def test_busy_channel_is_refused_and_other_channels_are_not(store_url: str) -> None:
    store, chain = open_store(store_url, timeout=5.0), ChannelChain()
    desk, req, a, b = VoucherDesk(ChannelBook(store), chain), offer(PRICE), Payer(), Payer(0x12)
    try:
        await pay(desk, req, a.sdk_payload(req))
        await pay(desk, req, b.sdk_payload(req))
        held = await desk.begin(
            parse_payment_signature(header(req, a.voucher(req, 2 * PRICE))), [req], time.time()
        )
        with pytest.raises(VerificationError, match="channel_busy"):
            await pay(desk, req, a.voucher(req, 2 * PRICE))
        assert await pay(desk, req, b.voucher(req, 2 * PRICE)) == 2 * PRICE
        assert await desk.finish(held, True, time.time())
        assert await pay(desk, req, a.voucher(req, 3 * PRICE)) == 3 * PRICE
    finally:
        await store.close()


async def test_fifty_concurrent_vouchers_over_two_gateways_on_one_redis(redis_url: str) -> None:
    """Two gateways (own Redis clients), 50 vouchers in flight at once on one
    channel, each racing on whatever charged total it last saw: the charged
    total equals exactly the sum of the accepted vouchers."""
    chain, req, payer = ChannelChain(), offer(PRICE), Payer()
    stores = [open_store(redis_url, timeout=5.0), open_store(redis_url, timeout=5.0)]
    desks = [VoucherDesk(ChannelBook(s), chain) for s in stores]
    try:
        await pay(desks[0], req, payer.sdk_payload(req))
        chain.channels[payer.channel_id(req).lower()].balance = 10**9
        accepted: list[int] = []
        refused: dict[str, int] = {}

        async def one(i: int) -> None:
            rec = await desks[i % 2].book.get(payer.channel_id(req))
            seen = int(rec["charged"]) if rec else 0
            try:
                accepted.append(await pay(desks[i % 2], req, payer.voucher(req, seen + PRICE), hold=0.005))
            except VerificationError as exc:
                refused[exc.reason] = refused.get(exc.reason, 0) + 1

        for _round in range(3):
            await asyncio.gather(*(one(i) for i in range(50)))
        rec = await desks[1].book.get(payer.channel_id(req))
        assert rec is not None
        assert sorted(accepted) == [PRICE * k for k in range(2, len(accepted) + 2)]
        assert int(rec["charged"]) == PRICE * (1 + len(accepted))
        assert set(refused) <= {
            "invalid_batch_settlement_evm_channel_busy",
            "invalid_batch_settlement_evm_cumulative_amount_mismatch",
        }
        assert refused.get("invalid_batch_settlement_evm_channel_busy", 0) > 0
        assert len(accepted) + sum(refused.values()) == 150
    finally:
        for s in stores:
            await s.close()
