"""batch-settlement through the real gateway, paid by the official SDK clients:
deposit → vouchers → top-up (→ refund), the facilitator stand-in keeping
channel state as the contract would."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.http.utils import decode_payment_required_header, decode_payment_response_header
from x402.mechanisms.evm.batch_settlement.client import BatchSettlementEvmScheme
from x402.mechanisms.evm.signers import EthAccountSigner

from tests.conftest import admin_url, url_of
from tests.support.batch import RECEIVER_AUTHORIZER, RECEIVER_AUTHORIZER_KEY
from tests.support.facilitator import running
from tests.support.node import NODE_DIR, run_node
from tests.support.paid_gateway import ChargePolicy

KEY = "0x" + "55" * 32
PAYER = Account.from_key(KEY).address
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
PRICE = 1000
NODE_SCRIPT = NODE_DIR / "scripts" / "x402_batch_client.mjs"


def key_file() -> str:
    """The receiver authorizer's key as a secret file (claims are signed with it)."""
    path = Path(tempfile.mkdtemp(prefix="pg-ra-")) / "receiver-authorizer.key"
    path.write_text(RECEIVER_AUTHORIZER_KEY + "\n")
    return str(path)


def toml(fac: str) -> str:
    return f"""
[x402]
networks = ["eip155:84532"]
pay_to = "{PAY_TO}"
facilitator = "{fac}"

[x402.batch]
receiver_authorizer = "{RECEIVER_AUTHORIZER}"
withdraw_delay = 900
claim_max_age = 1
claim_interval = 0.2
receiver_authorizer_key = {{ secret_file = "{key_file()}" }}
"""


async def gateway(factory: Any, upstream: str, fac: str, store: str = "memory://") -> Any:
    r = await factory(upstream, extra=toml(fac), store=store)
    r.gateway.policy.policy = ChargePolicy(PRICE)
    return r


def sdk_client() -> tuple[x402Client, BatchSettlementEvmScheme]:
    scheme = BatchSettlementEvmScheme(EthAccountSigner(Account.from_key(KEY)))
    client = x402Client()
    client.register("eip155:84532", scheme)
    return client, scheme


async def test_402_offers_exact_and_batch(gateway_factory: Any, upstream: str, http: Any) -> None:
    async with running() as (fac, _):
        r = await gateway(gateway_factory, upstream, fac)
        async with http.get(url_of(r, "/paid/x")) as resp:
            assert resp.status == 402
            required = decode_payment_required_header(resp.headers["PAYMENT-REQUIRED"])
        schemes = [a.scheme for a in required.accepts]
        assert schemes == ["exact", "batch-settlement"]
        extra = required.accepts[1].extra
        assert extra["receiverAuthorizer"] == RECEIVER_AUTHORIZER and extra["withdrawDelay"] == 900
        assert extra["minDeposit"] == str(10 * PRICE)


async def test_python_sdk_deposit_vouchers_topup(gateway_factory: Any, upstream: str, redis_url: str) -> None:
    async with running() as (fac, st):
        r = await gateway(gateway_factory, upstream, fac, store=redis_url)
        client, scheme = sdk_client()
        responses = []
        async with x402HttpxClient(client) as h:
            for _ in range(13):
                resp = await h.get(url_of(r, "/paid/data"))
                assert resp.status_code == 200, resp.text
                assert resp.json()["pop"]["PoP-Charged"] == str(PRICE)
                responses.append(decode_payment_response_header(resp.headers["PAYMENT-RESPONSE"]))
        cumul = [int(p.extra["channelState"]["chargedCumulativeAmount"]) for p in responses]
        assert cumul == [PRICE * k for k in range(1, 14)]
        txs = [p.transaction for p in responses]
        assert txs[0] and txs[10] and all(t == "" for i, t in enumerate(txs) if i not in (0, 10))
        (channel,) = st.chain.channels.values()
        assert channel.balance == 20 * PRICE  # two deposits of minDeposit
        assert st.calls["settle"] == 2
        # the admin view, then one claim round (claim_max_age = 1 s) through the stand-in
        async with httpx.AsyncClient() as admin:
            view = (await admin.get(admin_url(r, "/x402/channels"))).json()
            assert view["unclaimed"] == str(13 * PRICE) and view["claimed"] == "0"
            await asyncio.sleep(1.1)
            deadline = asyncio.get_running_loop().time() + 10
            while st.chain.paid_out < 13 * PRICE and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
            assert st.chain.paid_out == 13 * PRICE
            view = (await admin.get(admin_url(r, "/x402/channels"))).json()
            assert view["unclaimed"] == "0" and view["claimed"] == str(13 * PRICE)
        # the SDK's cooperative refund (sync httpx: off the loop serving the gateway)
        seen_by_origin = r.gateway.metrics.fees.labels("x402", "paid")._value.get()
        refund = await asyncio.to_thread(scheme.refund, url_of(r, "/paid/data"))
        assert refund.success and refund.transaction
        assert channel.balance == 13 * PRICE and st.chain.refunded == 7 * PRICE
        assert r.gateway.metrics.fees.labels("x402", "paid")._value.get() == seen_by_origin == 13 * PRICE
        # the SDK dropped its channel record (full refund): its next voucher restarts at 0 and
        # gets a corrective 402 carrying the server's state and last voucher (resync needs an RPC
        # the SDK reads on-chain state through; the stand-in has none, so the retry stops here)
        async with x402HttpxClient(client) as h:
            resp = await h.get(url_of(r, "/paid/data"))
        assert resp.status_code == 402
        required = decode_payment_required_header(resp.headers["PAYMENT-REQUIRED"])
        assert required.error == "invalid_batch_settlement_evm_cumulative_amount_mismatch"
        extra = required.accepts[1].extra
        assert extra["channelState"]["chargedCumulativeAmount"] == str(13 * PRICE)
        assert extra["voucherState"]["signedMaxClaimable"] == str(13 * PRICE)
        assert r.gateway.metrics.fees.labels("x402", "paid")._value.get() == 13 * PRICE


async def test_typescript_sdk_pays_and_refunds(gateway_factory: Any, upstream: str, redis_url: str) -> None:
    """@x402/fetch + @x402/evm's batch-settlement client, in node, against the same gateway."""
    async with running() as (fac, st):
        r = await gateway(gateway_factory, upstream, fac, store=redis_url)
        key = "0x" + "66" * 32
        out = await asyncio.to_thread(run_node, NODE_SCRIPT, url_of(r, "/paid/data"), key, "12")
        results = out["results"]
        assert [x["status"] for x in results] == [200] * 12, results
        assert [x["cumulative"] for x in results] == [str(PRICE * k) for k in range(1, 13)]
        assert [x["charged"] for x in results] == [str(PRICE)] * 12
        deposits = [i for i, x in enumerate(results) if x["transaction"]]
        assert deposits == [0, 10]
        assert out["refund"].get("success") is True, out["refund"]
        (channel,) = st.chain.channels.values()
        assert channel.balance == 12 * PRICE and st.chain.refunded == 8 * PRICE
        assert out["payer"] == Account.from_key(key).address
