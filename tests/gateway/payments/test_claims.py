"""The claim queue: highest voucher per channel, cumulative and idempotent, kill -9 safe."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp

from popgate.gateway.payments.batch import FacilitatorChain
from popgate.gateway.payments.channels import ChannelBook
from popgate.gateway.payments.claim_signer import ClaimSigner
from popgate.gateway.payments.claims import ACCOUNT, ClaimPolicy, ClaimQueue
from popgate.gateway.payments.facilitator import FacilitatorClient
from popgate.gateway.payments.ledger import reconcile
from popgate.gateway.payments.vouchers import VoucherDesk
from popgate.gateway.stores import open_store
from popgate.verifiers.x402 import parse_payment_signature
from tests.support.batch import RECEIVER_AUTHORIZER_KEY, Payer, header, offer
from tests.support.facilitator import running

PRICE = 1000
SIGNER = ClaimSigner(RECEIVER_AUTHORIZER_KEY.encode())


async def pay(desk: VoucherDesk, req: Any, payload: dict[str, Any]) -> None:
    begun = await desk.begin(parse_payment_signature(header(req, payload)), [req], time.time())
    assert await desk.finish(begun, True, time.time())


async def test_claims_follow_policy_and_never_double(redis_url: str) -> None:
    async with running() as (fac, st), aiohttp.ClientSession() as s:
        store = open_store(redis_url, timeout=5.0)
        client = FacilitatorClient(s, fac)
        req, payer = offer(PRICE), Payer()
        desk = VoucherDesk(ChannelBook(store), FacilitatorChain(client))
        queue = ClaimQueue(desk.book, store, client, req, ClaimPolicy(threshold=3 * PRICE), SIGNER)
        await pay(desk, req, payer.sdk_payload(req))
        await pay(desk, req, payer.voucher(req, 2 * PRICE))
        assert await queue.run_once(time.time()) == []  # below threshold, young
        await pay(desk, req, payer.voucher(req, 3 * PRICE))
        assert await queue.run_once(time.time()) == [(payer.channel_id(req), 3 * PRICE)]
        assert await queue.run_once(time.time()) == []  # nothing new
        await pay(desk, req, payer.voucher(req, 4 * PRICE))
        aged = ClaimQueue(desk.book, store, client, req, ClaimPolicy(threshold=10**9, max_age=0), SIGNER)
        assert await aged.run_once(time.time()) == [(payer.channel_id(req), PRICE)]
        assert st.chain.paid_out == 4 * PRICE == await store.balance(ACCOUNT)
        summary = await queue.summary()
        assert summary["unclaimed"] == "0" and summary["claimed"] == str(4 * PRICE)
        await store.close()


async def test_kill_9_during_claims_loses_nothing_and_never_double_claims(redis_url: str) -> None:
    async with running() as (fac, st), aiohttp.ClientSession() as s:
        store = open_store(redis_url, timeout=5.0)
        client = FacilitatorClient(s, fac)
        req = offer(PRICE, min_deposit=10 * PRICE)
        desk = VoucherDesk(ChannelBook(store), FacilitatorChain(client))
        payers = [Payer(0x20 + i) for i in range(6)]
        charged = {p: 0 for p in payers}

        async def spend_some() -> None:
            for p in payers:
                if charged[p] == 0:
                    await pay(desk, req, p.sdk_payload(req))
                    charged[p] = PRICE
                for _ in range(random.randint(1, 3)):
                    if charged[p] + PRICE <= 10 * PRICE:
                        charged[p] += PRICE
                        await pay(desk, req, p.voucher(req, charged[p]))

        cmd = [sys.executable, "-m", "tests.support.claim_runner", redis_url, fac, json.dumps(req.to_json())]
        kills = 0
        for _round in range(6):
            await spend_some()
            st.latency = random.choice([0.01, 0.03, 0.06])
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            assert proc.stdout is not None
            assert await asyncio.to_thread(proc.stdout.readline) == b"ready\n"
            await asyncio.sleep(random.uniform(0.0, 0.3))  # inside the first round's claims
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            kills += 1
        st.latency = 0
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.time() + 20
            while time.time() < deadline and st.chain.paid_out < sum(charged.values()):
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
        finally:
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=10)
        total = sum(charged.values())
        assert st.chain.paid_out == total, err[-2000:]
        assert await store.balance(ACCOUNT) == total
        entries = await store.ledger(ACCOUNT)
        reconcile(await store.balance(ACCOUNT), entries)
        assert st.chain.claim_txs > len(payers) and kills == 6
        await store.close()


async def test_claims_carry_the_receiver_authorizers_signature(redis_url: str) -> None:
    """The stand-in runs claimWithSignature as the contract does: an unsigned
    batch, or one signed by another key, moves nothing; the claim intent stays
    and the properly signed round claims it, once."""
    async with running() as (fac, st), aiohttp.ClientSession() as s:
        store = open_store(redis_url, timeout=5.0)
        client = FacilitatorClient(s, fac)
        req, payer = offer(PRICE), Payer()
        desk = VoucherDesk(ChannelBook(store), FacilitatorChain(client))
        await pay(desk, req, payer.sdk_payload(req))
        await pay(desk, req, payer.voucher(req, 2 * PRICE))
        policy = ClaimPolicy(threshold=1)
        unsigned = ClaimQueue(desk.book, store, client, req, policy)
        assert await unsigned.run_once(time.time()) == []
        impostor = ClaimQueue(desk.book, store, client, req, policy, ClaimSigner(b"0x" + b"44" * 32))
        assert await impostor.run_once(time.time()) == []
        assert (st.chain.unsigned_claims, st.chain.badly_signed_claims, st.chain.paid_out) == (1, 1, 0)
        assert await store.balance(ACCOUNT) == 0
        signed = ClaimQueue(desk.book, store, client, req, policy, SIGNER)
        assert await signed.run_once(time.time()) == [(payer.channel_id(req), 2 * PRICE)]
        assert await signed.run_once(time.time()) == []
        assert st.chain.paid_out == 2 * PRICE == await store.balance(ACCOUNT)
        await store.close()
