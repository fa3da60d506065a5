"""Exactly-once across two gateway processes sharing one Redis.

Already covered elsewhere (reused, not duplicated here):

* puzzle solution, two processes: tests/fleet/test_fleet.py
  ``test_puzzle_solution_is_spent_once_across_the_fleet``,
  ``test_puzzle_header_is_spent_once_across_the_fleet``;
  two in-process gateways: tests/gateway/schemes/test_puzzle_fleet.py
* hashcash stamp: tests/fleet/test_fleet.py ``test_hashcash_stamp_is_spent_once_across_the_fleet``
* session budget: tests/fleet/test_fleet.py ``test_session_budget_is_shared_by_the_fleet``
* x402 payment nonce, one gateway, concurrent copies:
  tests/gateway/payments/test_fees_x402.py ``test_concurrent_copies_of_one_payment_reach_upstream_once``
* store primitives under concurrency (claim, debit, ledger), all backends:
  tests/gateway/stores/test_contract.py

Here: prepaid-credit debits through two real ``popgate`` processes.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter

import aiohttp
import redis as redis_lib

from popgate.gateway.ops.config import load_config
from popgate.gateway.payments.ledger import reconcile
from popgate.gateway.stores.redis import RedisStore
from tests.support.servers import ROOT, wait_port_async, write_config

TOKEN = "z" * 40
PRICE = 1_000


async def test_credit_debits_exactly_once_across_two_processes(redis_url, upstream, tmp_path):
    """One API key with a balance for exactly 25 requests; 80 concurrent paid
    requests spread over two gateway processes: exactly 25 are served, 55 get
    402, the balance ends at 0 and the ledger holds exactly 25 debits."""
    redis_lib.Redis.from_url(redis_url).flushdb()
    (tmp_path / "admin").write_text(TOKEN)
    extra = f'[credits]\nadmin_token = {{ secret_file = "{tmp_path / "admin"}" }}\n'
    configs, procs = [], []
    for i in range(2):
        d = tmp_path / f"g{i}"
        d.mkdir()
        path = write_config(d, upstream, store=redis_url, extra=extra)
        configs.append(load_config(path))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "tests.support.paid_gateway", str(path), str(PRICE)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        for c in configs:
            await wait_port_async(c.listen.port)
            await wait_port_async(c.admin.port)
        async with aiohttp.ClientSession() as http:
            async with http.post(
                f"http://127.0.0.1:{configs[0].admin.port}/admin/credits/keys",
                json={"amount": 25 * PRICE},
                headers={"Authorization": f"Bearer {TOKEN}"},
            ) as r:
                assert r.status == 201
                created = await r.json()
            auth = {"Authorization": f"Bearer {created['api_key']}"}

            async def one(i: int) -> int:
                port = configs[i % 2].listen.port
                async with http.get(f"http://127.0.0.1:{port}/paid/hello", headers=auth) as r:
                    await r.read()
                    return r.status

            statuses = Counter(await asyncio.gather(*(one(i) for i in range(80))))
        assert statuses == {200: 25, 402: 55}, statuses
        store = RedisStore(redis_url)
        try:
            account = created["account"]
            entries = await store.ledger(account, limit=1000)
            balance = await store.balance(account)
        finally:
            await store.close()
        reconcile(balance, entries)
        assert balance == 0
        assert Counter(e.kind for e in entries) == {"topup": 1, "debit": 25}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
