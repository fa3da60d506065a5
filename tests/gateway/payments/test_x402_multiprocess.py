"""Two gateway processes sharing one real Redis: one payment reaches the
origin once; the credits ledger reconciles after a kill -9 mid-load."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
from aiohttp import web
from eth_account import Account
from x402 import x402Client
from x402.http.utils import decode_payment_required_header, encode_payment_signature_header
from x402.mechanisms.evm.exact.register import register_exact_evm_client

from popgate.gateway.payments.ledger import LedgerEntry, reconcile
from tests.support.facilitator import running
from tests.support.servers import ROOT, free_port, serve_app, wait_port_async, write_config

PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
TOKEN = "a" * 40


def spawn(
    tmp: Path, name: str, upstream: str, store: str, extra: str
) -> tuple[subprocess.Popen[bytes], int, int]:
    d = tmp / name
    d.mkdir()
    (d / "admin").write_text(TOKEN)
    port, admin = free_port(), free_port()
    extra += f'\n[credits]\nadmin_token = {{ secret_file = "{d / "admin"}" }}\n'
    path = write_config(d, upstream, store=store, extra=extra, listen=port, admin=admin)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.paid_gateway", str(path)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, port, admin


async def counting_origin(seen: list[str]):
    async def handler(request: web.Request) -> web.Response:
        seen.append(request.headers.get("PoP-Charged", ""))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return serve_app(app)


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_one_payment_two_processes_one_upstream_hit(tmp_path, redis_url):
    """20 concurrent copies of one payment over two gateway processes on one
    Redis: exactly one reaches the origin and one settlement happens."""
    seen: list[str] = []
    async with running() as (fac, st), await counting_origin(seen) as oport:
        extra = f'[x402]\nnetworks = ["eip155:84532"]\npay_to = "{PAY_TO}"\nfacilitator = "{fac}"\n'
        procs = [spawn(tmp_path, n, f"http://127.0.0.1:{oport}", redis_url, extra) for n in "ab"]
        try:
            for _, port, _ in procs:
                await wait_port_async(port)
            urls = [f"http://127.0.0.1:{p}/paid/one" for _, p, _ in procs]
            async with aiohttp.ClientSession() as s:
                async with s.get(urls[0]) as r:
                    required = decode_payment_required_header(r.headers["PAYMENT-REQUIRED"])
                client = x402Client()
                register_exact_evm_client(client, Account.from_key("0x" + "66" * 32))
                header = encode_payment_signature_header(await client.create_payment_payload(required))

                async def go(i: int) -> int:
                    async with s.get(urls[i % 2], headers={"PAYMENT-SIGNATURE": header}) as r:
                        await r.read()
                        return r.status

                statuses = await asyncio.gather(*(go(i) for i in range(20)))
            assert statuses.count(200) == 1 and statuses.count(402) == 19
            assert seen == ["10000"] and len(st.settled) == 1
        finally:
            for p, _, _ in procs:
                stop(p)


async def test_ledger_reconciles_after_kill_mid_load(tmp_path, redis_url):
    """Concurrent Bearer-key load on two processes, one killed with SIGKILL in
    the middle: the ledger sums to the balance and every request the origin
    served was debited."""
    seen: list[str] = []
    async with await counting_origin(seen) as oport:
        procs = [spawn(tmp_path, n, f"http://127.0.0.1:{oport}", redis_url, "") for n in "ab"]
        try:
            for _, port, admin_port in procs:  # the admin listener binds after the proxy's
                await wait_port_async(port)
                await wait_port_async(admin_port)
            admin = f"http://127.0.0.1:{procs[1][2]}"
            hdr = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession() as s:
                async with s.post(
                    f"{admin}/admin/credits/keys", json={"amount": 10_000_000}, headers=hdr
                ) as r:
                    created = await r.json()
                auth = {"Authorization": f"Bearer {created['api_key']}"}
                urls = [f"http://127.0.0.1:{p}/paid/x" for _, p, _ in procs]
                ok = 0

                async def go(i: int) -> None:
                    nonlocal ok
                    try:
                        async with s.get(urls[i % 2], headers=auth) as r:
                            await r.read()
                            ok += r.status == 200
                    except aiohttp.ClientError:
                        pass

                tasks = [asyncio.create_task(go(i)) for i in range(600)]
                while len(seen) < 60:
                    await asyncio.sleep(0.005)
                os.kill(procs[0][0].pid, signal.SIGKILL)
                await asyncio.gather(*tasks)
                await asyncio.sleep(0.3)
                async with s.get(
                    f"{admin}/admin/credits/accounts/{created['account']}/ledger?limit=10000", headers=hdr
                ) as r:
                    entries = [
                        LedgerEntry(account=created["account"], **e) for e in (await r.json())["entries"]
                    ]
                async with s.get(f"{admin}/admin/credits/accounts/{created['account']}", headers=hdr) as r:
                    balance = (await r.json())["balance"]
            reconcile(balance, entries)
            debits = sum(1 for e in entries if e.kind == "debit")
            refunds = sum(1 for e in entries if e.kind == "refund")
            assert refunds == 0 and 60 <= debits < 600
            assert len(seen) <= debits and all(v == "10000" for v in seen)
            assert ok <= len(seen)
            assert balance == 10_000_000 - 10_000 * debits
        finally:
            for p, _, _ in procs:
                stop(p)


async def test_fifty_concurrent_vouchers_two_gateway_processes(tmp_path, redis_url):
    """batch-settlement: 50 vouchers on ONE channel at once over two gateway
    processes on one Redis, each built on the charged total it last saw; the
    charged total equals exactly the accepted vouchers, and the origin saw
    exactly the accepted ones; the rest are channel_busy / cumulative mismatch."""
    from popgate.verifiers.x402 import Requirements
    from tests.support.batch import RECEIVER_AUTHORIZER, Payer, header

    seen: list[str] = []
    async with running() as (fac, st), await counting_origin(seen) as oport:
        extra = (
            f'[x402]\nnetworks = ["eip155:84532"]\npay_to = "{PAY_TO}"\nfacilitator = "{fac}"\n'
            f'[x402.batch]\nreceiver_authorizer = "{RECEIVER_AUTHORIZER}"\nmin_deposit = "100.00"\n'
        )
        procs = [spawn(tmp_path, n, f"http://127.0.0.1:{oport}", redis_url, extra) for n in "ab"]
        try:
            for _, port, _ in procs:
                await wait_port_async(port)
            urls = [f"http://127.0.0.1:{p}/paid/v" for _, p, _ in procs]
            async with aiohttp.ClientSession() as s:
                async with s.get(urls[0]) as r:
                    required = decode_payment_required_header(r.headers["PAYMENT-REQUIRED"])
                offer = next(a for a in required.accepts if a.scheme == "batch-settlement")
                req = Requirements.from_json(offer.model_dump(by_alias=True))
                price, payer = int(req.amount), Payer(0x77)

                async def send(i: int, payload: dict) -> tuple[int, str]:
                    h = {"PAYMENT-SIGNATURE": header(req, payload)}
                    async with s.get(urls[i % 2], headers=h) as r:
                        body = await r.text()
                        return r.status, body

                status, _ = await send(0, payer.sdk_payload(req))
                assert status == 200
                accepted, base = 1, price
                for _round in range(3):
                    got = await asyncio.gather(
                        *(send(i, payer.voucher(req, base + price * (1 + i % 2))) for i in range(50))
                    )
                    ok = [i for i, (code, _) in enumerate(got) if code == 200]
                    assert all(code in (200, 402) for code, _ in got), got
                    assert all(
                        "channel_busy" in b or "cumulative_amount_mismatch" in b
                        for code, b in got
                        if code == 402
                    )
                    accepted += len(ok)
                    # at most one voucher per cumulative amount can be charged
                    assert len({base + price * (1 + i % 2) for i in ok}) == len(ok)
                    base += price * len(ok)
            async with aiohttp.ClientSession() as s:
                async with s.get(f"http://127.0.0.1:{procs[1][2]}/x402/channels") as r:
                    view = await r.json()
            (channel,) = view["channels"]
            assert st.calls["settle"] == 1  # the deposit; vouchers never reach the facilitator
            assert int(channel["charged"]) == price * accepted == base
            assert len(seen) == accepted and set(seen) == {str(price)}
        finally:
            for proc, _, _ in procs:
                stop(proc)
