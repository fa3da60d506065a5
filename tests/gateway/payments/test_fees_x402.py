"""x402 through the real gateway: the official SDK client, the local
facilitator, the demo upstream, a Charge from the policy."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from pathlib import Path

import aiohttp
import pytest
from eth_account import Account
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.http.utils import decode_payment_response_header
from x402.mechanisms.evm.exact.register import register_exact_evm_client

from popgate.gateway.http.server import start
from popgate.gateway.ops.config import ConfigError, load_config
from tests.conftest import url_of
from tests.support.facilitator import FacilitatorState, running
from tests.support.paid_gateway import ChargePolicy
from tests.support.servers import write_config

KEY = "0x" + "44" * 32
PAYER = Account.from_key(KEY).address
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"


def x402_toml(fac: str, **kw: str) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in kw.items())
    return f"""
[x402]
networks = ["eip155:84532"]
pay_to = "{PAY_TO}"
facilitator = "{fac}"
settle_interval = 0.1
retry_backoff = 0.05
{extra}"""


async def paid_gateway(factory, upstream: str, fac: str, store: str = "memory://", **kw: str):
    r = await factory(upstream, extra=x402_toml(fac, **kw), store=store)
    r.gateway.policy.policy = ChargePolicy(10_000)
    return r


def sdk() -> x402Client:
    client = x402Client()
    register_exact_evm_client(client, Account.from_key(KEY))
    return client


async def signed_header(gw_url: str) -> str:
    """Get a real 402 and let the SDK sign a payment for it (not sent)."""
    from x402.http.utils import decode_payment_required_header, encode_payment_signature_header

    async with aiohttp.ClientSession() as s:
        async with s.get(gw_url) as r:
            assert r.status == 402
            required = decode_payment_required_header(r.headers["PAYMENT-REQUIRED"])
    payload = await sdk().create_payment_payload(required)
    return encode_payment_signature_header(payload)


async def test_sdk_client_pays_through_gateway(gateway_factory, upstream):
    """The official SDK's httpx client gets popgate's real 402, pays, and gets
    the upstream's answer with PAYMENT-RESPONSE; the origin sees PoP-Charged."""
    async with running() as (fac, st):
        r = await paid_gateway(gateway_factory, upstream, fac)
        async with x402HttpxClient(sdk()) as http:
            resp = await http.get(url_of(r, "/paid/data"))
        assert resp.status_code == 200, resp.text
        assert resp.json()["pop"]["PoP-Charged"] == "10000"
        settle = decode_payment_response_header(resp.headers["PAYMENT-RESPONSE"])
        assert settle.success and settle.payer == PAYER
        assert st.settled[0]["transaction"] == settle.transaction and st.settled[0]["value"] == "10000"
        fees = r.gateway.metrics.fees.labels("x402", "paid")._value.get()
        assert fees == 10_000


async def test_unpaid_402_lists_payment_required(gateway_factory, upstream, http):
    """No payment: 402 problem+json with PAYMENT-REQUIRED (x402 v2) for the route's price."""
    async with running() as (fac, _):
        r = await paid_gateway(gateway_factory, upstream, fac)
        async with http.get(url_of(r, "/paid/x")) as resp:
            assert resp.status == 402
            body = await resp.json()
            pr = json.loads(base64.b64decode(resp.headers["PAYMENT-REQUIRED"]))
        assert pr["x402Version"] == 2 and pr["resource"]["url"].endswith("/paid/x")
        acc = pr["accepts"][0]
        assert acc["amount"] == "10000" and acc["network"] == "eip155:84532"
        assert acc["payTo"] == PAY_TO and acc["extra"] == {"name": "USDC", "version": "2"}
        assert [w["kind"] for w in body["ways_out"]] == ["pay"]
        async with http.get(url_of(r, "/free")) as resp:
            assert resp.status == 200


@pytest.mark.parametrize(
    "header,value",
    [
        ("PAYMENT-SIGNATURE", "%%%"),
        ("PAYMENT-SIGNATURE", base64.b64encode(b"[1]").decode()),
        ("PAYMENT-SIGNATURE", base64.b64encode(b'{"x402Version":1}').decode()),
    ],
)
async def test_malformed_payment_is_400(gateway_factory, upstream, http, header, value):
    """A malformed payment header gets 400 with a reason, not a silent 402."""
    async with running() as (fac, _):
        r = await paid_gateway(gateway_factory, upstream, fac)
        async with http.get(url_of(r, "/paid/x"), headers={header: value}) as resp:
            assert resp.status == 400
            assert (await resp.json())["reason"] == "malformed_payment"


async def test_x_payment_needs_accept_v1(gateway_factory, upstream, http):
    """X-PAYMENT is ignored (→ 402) unless accept_v1; then garbage in it is 400."""
    async with running() as (fac, _):
        r = await paid_gateway(gateway_factory, upstream, fac)
        async with http.get(url_of(r, "/paid/x"), headers={"X-PAYMENT": "%%"}) as resp:
            assert resp.status == 402
        r2 = await paid_gateway(gateway_factory, upstream, fac, accept_v1="true")
        async with http.get(url_of(r2, "/paid/x"), headers={"X-PAYMENT": "%%"}) as resp:
            assert resp.status == 400


async def test_concurrent_copies_of_one_payment_reach_upstream_once(gateway_factory, upstream, http):
    """20 concurrent requests carrying one payment: one 200, the rest 402 nonce_reused."""
    async with running() as (fac, st):
        r = await paid_gateway(gateway_factory, upstream, fac)
        header = await signed_header(url_of(r, "/paid/once"))

        async def go() -> tuple[int, str]:
            async with http.get(url_of(r, "/paid/once"), headers={"PAYMENT-SIGNATURE": header}) as resp:
                body = await resp.json()
                return resp.status, json.dumps(body)

        results = await asyncio.gather(*(go() for _ in range(20)))
        assert [s for s, _ in results].count(200) == 1
        assert all("nonce_reused" in b for s, b in results if s == 402)
        assert len(st.settled) == 1


async def test_bad_signature_is_402_with_reason(gateway_factory, upstream, http):
    """A tampered payment gets 402 whose PAYMENT-REQUIRED error names the reason."""
    async with running() as (fac, st):
        r = await paid_gateway(gateway_factory, upstream, fac)
        header = await signed_header(url_of(r, "/paid/x"))
        obj = json.loads(base64.b64decode(header))
        obj["payload"]["authorization"]["value"] = "10001"
        obj["accepted"]["amount"] = "10001"
        bad = base64.b64encode(json.dumps(obj).encode()).decode()
        async with http.get(url_of(r, "/paid/x"), headers={"PAYMENT-SIGNATURE": bad}) as resp:
            assert resp.status == 402
            pr = json.loads(base64.b64decode(resp.headers["PAYMENT-REQUIRED"]))
            assert pr["error"] == "requirements_mismatch"
        assert st.calls["settle"] == 0


async def test_settlement_failure_is_402_with_payment_response(gateway_factory, upstream):
    """settle = before: a rejected settlement never reaches the origin; the SDK
    sees 402 with PAYMENT-RESPONSE success=false."""
    async with running(FacilitatorState(settle_mode="fail")) as (fac, _):
        r = await paid_gateway(gateway_factory, upstream, fac)
        async with x402HttpxClient(sdk()) as http:
            resp = await http.get(url_of(r, "/paid/data"))
        assert resp.status_code == 402
        settle = decode_payment_response_header(resp.headers["PAYMENT-RESPONSE"])
        assert not settle.success and settle.error_reason == "transaction_failed"


async def test_settlement_pending_is_served_and_reconciled_by_worker(gateway_factory, upstream):
    """settlement_pending (tx broadcast) twice: the response is released, the
    background worker re-sends the payload and the facilitator reconciles."""
    async with running(FacilitatorState(settle_mode="pending", pending_rounds=3)) as (fac, st):
        r = await paid_gateway(gateway_factory, upstream, fac)
        async with x402HttpxClient(sdk()) as http:
            resp = await http.get(url_of(r, "/paid/data"))
        assert resp.status_code == 200
        settle = decode_payment_response_header(resp.headers["PAYMENT-RESPONSE"])
        assert settle.error_reason == "settlement_pending" and settle.transaction
        for _ in range(100):
            if st.settled:
                break
            await asyncio.sleep(0.05)
        assert len(st.settled) == 1 and st.settled[0]["transaction"] == settle.transaction


async def test_facilitator_down_is_503_and_payment_reusable(gateway_factory, upstream, http):
    """settle = before, facilitator unreachable: 503, nothing queued, and the
    same payment works once the facilitator is back."""
    state = FacilitatorState(settle_mode="http500")
    async with running(state) as (fac, st):
        r = await paid_gateway(gateway_factory, upstream, fac)
        header = await signed_header(url_of(r, "/paid/x"))
        async with http.get(url_of(r, "/paid/x"), headers={"PAYMENT-SIGNATURE": header}) as resp:
            assert resp.status == 503
        state.settle_mode = "ok"
        async with http.get(url_of(r, "/paid/x"), headers={"PAYMENT-SIGNATURE": header}) as resp:
            assert resp.status == 200
        assert len(st.settled) == 1


async def test_settle_after_with_debt_limit(gateway_factory, upstream, http):
    """settle = after: served at once while the payer's unsettled debt stays
    within the limit; over it, 402 debt_limit; settling frees the limit."""
    state = FacilitatorState(settle_mode="http500")
    async with running(state) as (fac, st):
        r = await paid_gateway(gateway_factory, upstream, fac, settle='"after"', debt_limit='"0.02"')
        got = []
        for _ in range(3):
            header = await signed_header(url_of(r, "/paid/x"))
            async with http.get(url_of(r, "/paid/x"), headers={"PAYMENT-SIGNATURE": header}) as resp:
                got.append(resp.status)
                if resp.status == 402:
                    pr = json.loads(base64.b64decode(resp.headers["PAYMENT-REQUIRED"]))
                    assert pr["error"] == "debt_limit"
        assert got == [200, 200, 402]
        state.settle_mode = "ok"
        for _ in range(200):
            if len(st.settled) == 2:
                break
            await asyncio.sleep(0.05)
        assert len(st.settled) == 2
        from popgate.gateway.stores.base import key

        debt = key("x402debt", f"eip155:84532:{PAYER.lower()}")
        for _ in range(100):  # the debt is lowered right after the facilitator answers
            if await r.gateway.services.store.get(debt) == b"0":
                break
            await asyncio.sleep(0.02)
        header = await signed_header(url_of(r, "/paid/x"))
        async with http.get(url_of(r, "/paid/x"), headers={"PAYMENT-SIGNATURE": header}) as resp:
            assert resp.status == 200


async def test_restart_loses_no_settlement(tmp_path: Path, upstream, http):
    """settle = after, facilitator down, gateway stopped: a new gateway on the
    same SQLite store settles what the first one owed."""
    state = FacilitatorState(settle_mode="http500")
    async with running(state) as (fac, st):
        path = write_config(
            tmp_path, upstream, store=f"sqlite:///{tmp_path / 's.db'}", extra=x402_toml(fac, settle='"after"')
        )
        first = await start(load_config(path))
        first.gateway.policy.policy = ChargePolicy(10_000)
        header = await signed_header(url_of(first, "/paid/x"))
        async with http.get(url_of(first, "/paid/x"), headers={"PAYMENT-SIGNATURE": header}) as resp:
            assert resp.status == 200
        await asyncio.sleep(0.3)
        await first.stop()
        assert st.settled == []
        state.settle_mode = "ok"
        second = await start(load_config(path))
        try:
            for _ in range(100):
                if st.settled:
                    break
                await asyncio.sleep(0.05)
            assert len(st.settled) == 1 and st.settled[0]["payer"] == PAYER
        finally:
            await second.stop()


def test_config_problems_reported_with_key_paths(tmp_path: Path):
    """Every [x402]/[credits] problem is reported at start-up with its key path."""
    from popgate.gateway.app import build_app
    from popgate.gateway.extensions import default_extensions
    from popgate.gateway.stores.memory import MemoryStore

    path = write_config(
        tmp_path,
        "http://127.0.0.1:9",
        extra="""
[x402]
networks = ["eip155:999", "solana:x"]
pay_to = "nope"
settle = "sometime"
price = 0.01
verify_timeout = 0
settle_timeout = "long"
[x402.rpc]
"eip155:1" = "ftp://x"
[credits]
admin_token = { secret_env = "POPGATE_TEST_UNSET_TOKEN" }
topup_amounts = ["-1"]
""",
    )
    with pytest.raises(ConfigError) as info:
        build_app(load_config(path), store=MemoryStore(), extensions=default_extensions())
    text = "\n".join(info.value.problems)
    for p in (
        "x402.networks[1]",
        'x402.assets."eip155:999"',
        "x402.pay_to",
        "x402.facilitator",
        "x402.settle",
        "x402.price",
        'x402.rpc."eip155:1"',
        "x402.verify_timeout",
        "x402.settle_timeout",
        "credits.admin_token.secret_env",
        "credits.topup_amounts[0]",
    ):
        assert p in text, p
    _ = time
