"""x402 ``upto`` through the real gateway, paid by the official SDK clients: each
request authorizes the route's maximum, the origin reports its usage in a header,
popgate settles usage x unit price through the facilitator stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from eth_account import Account
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.http.utils import decode_payment_required_header, decode_payment_response_header
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.mechanisms.evm.upto.client import UptoEvmScheme

from tests.conftest import url_of
from tests.support.facilitator import running
from tests.support.node import NODE_DIR, run_node
from tests.support.paid_gateway import ChargePolicy
from tests.support.servers import serve_app
from tests.support.upto import MAX, PRICE, UNIT, USAGE_HEADER, origin_app, toml
from tests.support.upto_facilitator import FACILITATOR_ADDRESS

KEY = "0x" + "77" * 32
NODE_SCRIPT = NODE_DIR / "scripts" / "x402_upto_client.mjs"


@pytest.fixture
async def origin() -> AsyncIterator[str]:
    async with serve_app(origin_app()) as port:
        yield f"http://127.0.0.1:{port}"


async def gateway(factory: Any, origin: str, fac: str, store: str = "memory://") -> Any:
    r = await factory(origin, extra=toml(fac), store=store)
    r.gateway.policy.policy = ChargePolicy(PRICE)
    return r


async def test_402_offers_upto_beside_exact(gateway_factory: Any, origin: str, http: Any) -> None:
    async with running() as (fac, _):
        r = await gateway(gateway_factory, origin, fac)
        async with http.get(url_of(r, "/paid/x")) as resp:
            assert resp.status == 402
            required = decode_payment_required_header(resp.headers["PAYMENT-REQUIRED"])
        assert [(a.scheme, a.amount) for a in required.accepts] == [("exact", str(PRICE)), ("upto", str(MAX))]
        extra = required.accepts[1].extra
        assert extra["facilitatorAddress"] == FACILITATOR_ADDRESS
        assert extra["assetTransferMethod"] == "permit2" and extra["name"] == "USDC"


async def test_python_sdk_pays_usage(gateway_factory: Any, origin: str, redis_url: str) -> None:
    async with running() as (fac, st):
        r = await gateway(gateway_factory, origin, fac, store=redis_url)
        client = x402Client()
        client.register("eip155:84532", UptoEvmScheme(EthAccountSigner(Account.from_key(KEY))))
        async with x402HttpxClient(client) as h:
            for usage in (7, 50, 0):
                resp = await h.get(url_of(r, f"/paid/llm?usage={usage}"))
                assert resp.status_code == 200, resp.text
                assert resp.json()["served"] is True
                assert USAGE_HEADER not in resp.headers  # stripped: the bill is in PAYMENT-RESPONSE
                assert resp.headers["PoP-Charged"] == str(usage * UNIT)
                settled = decode_payment_response_header(resp.headers["PAYMENT-RESPONSE"])
                assert settled.success and settled.amount == str(usage * UNIT)
                assert bool(settled.transaction) == (usage > 0)  # zero usage: nothing on chain
        assert [(s["value"], s["max"]) for s in st.settled] == [
            (str(7 * UNIT), str(MAX)),
            (str(MAX), str(MAX)),
        ]
        assert st.calls["verify"] == 3 and st.calls["settle"] == 2
        payer = Account.from_key(KEY).address.lower()
        assert r.gateway.metrics.fees.labels("x402", "paid")._value.get() == 57 * UNIT
        assert all(s["payer"].lower() == payer for s in st.settled)


async def test_typescript_sdk_pays_usage(gateway_factory: Any, origin: str, redis_url: str) -> None:
    """@x402/fetch + @x402/evm's upto client, in node, against the same gateway."""
    async with running() as (fac, st):
        r = await gateway(gateway_factory, origin, fac, store=redis_url)
        key = "0x" + "78" * 32
        out = await asyncio.to_thread(run_node, NODE_SCRIPT, url_of(r, "/paid/llm"), key, "3")
        results = out["results"]
        assert [x["status"] for x in results] == [200] * 3, results
        assert [x["charged"] for x in results] == [str(k * UNIT) for k in (1, 2, 3)]
        assert [x["amount"] for x in results] == [str(k * UNIT) for k in (1, 2, 3)]
        assert all(x["success"] and x["served"] for x in results)
        assert [s["value"] for s in st.settled] == [str(k * UNIT) for k in (1, 2, 3)]
        assert {s["payer"] for s in st.settled} == {out["payer"]}
