"""Settle-after debt through the real gateway: payer addresses are free to make,
so unsettled debt is capped per client network and fleet-wide, and a new payer
is confirmed by the facilitator before it is served; the signed authorization
itself never reaches the origin."""

from __future__ import annotations

import asyncio
import base64
import json

from eth_account import Account
from x402 import x402Client
from x402.http.utils import decode_payment_required_header, encode_payment_signature_header
from x402.mechanisms.evm.exact.register import register_exact_evm_client

from popgate.gateway.stores.base import key
from tests.conftest import url_of
from tests.gateway.payments.test_fees_x402 import PAYER, paid_gateway
from tests.support.facilitator import FacilitatorState, running

FRESH = [Account.from_key("0x" + f"{i + 1:02x}" * 32) for i in range(5)]


async def pay(http, url: str, account=None) -> tuple[int, dict, dict]:
    """A real 402, a payment signed for it by ``account`` (default: the funded
    payer), sent once: status, PAYMENT-REQUIRED of a refusal, the origin's view."""
    client = x402Client()
    register_exact_evm_client(client, account or Account.from_key("0x" + "44" * 32))
    async with http.get(url) as r:
        assert r.status == 402
        required = decode_payment_required_header(r.headers["PAYMENT-REQUIRED"])
    header = encode_payment_signature_header(await client.create_payment_payload(required))
    async with http.get(url, headers={"PAYMENT-SIGNATURE": header}) as r:
        refused = json.loads(base64.b64decode(r.headers["PAYMENT-REQUIRED"])) if r.status == 402 else {}
        seen = await r.json() if r.status == 200 else {}
        return r.status, refused, seen


async def test_fresh_unfunded_keys_are_not_served_on_credit(gateway_factory, upstream, http):
    """The probe: five fresh keys, three requests each, nothing ever settles. Was:
    15 served. Now: the facilitator's /verify refuses each new payer (no balance)
    before anything is served; a funded payer is still served at once."""
    state = FacilitatorState(settle_mode="http500", funded={PAYER.lower()})
    async with running(state) as (fac, st):
        r = await paid_gateway(gateway_factory, upstream, fac, settle='"after"')
        url = url_of(r, "/paid/x")
        got = [await pay(http, url, acct) for acct in FRESH for _ in range(3)]
        assert [s for s, _, _ in got] == [402] * 15
        assert {p["error"] for _, p, _ in got} == {"insufficient_funds"}
        status, _, _ = await pay(http, url)
        assert status == 200
        assert st.calls["verify"] == 16


async def test_unsettled_debt_is_capped_per_client_network(gateway_factory, upstream, http):
    """Funded payers, a facilitator that never settles: whatever the number of
    payer addresses, one client network is served at most debt_limit_network."""
    async with running(FacilitatorState(settle_mode="http500")) as (fac, _):
        r = await paid_gateway(gateway_factory, upstream, fac, settle='"after"', debt_limit_network='"0.03"')
        got = [await pay(http, url_of(r, "/paid/x"), acct) for acct in FRESH]
        assert [s for s, _, _ in got] == [200, 200, 200, 402, 402]
        assert got[3][1]["error"] == "debt_limit"
        store = r.gateway.services.store
        assert await store.get(key("x402debt", "net:127.0.0.0/24")) == b"30000"
        assert await store.get(key("x402debt", "total")) == b"30000"


async def test_unsettled_debt_is_capped_fleet_wide(gateway_factory, upstream, http, redis_url):
    """Two gateways on one Redis: the total cap holds across the fleet; once the
    facilitator settles, the debt is paid down and payers are served again
    (a payer that has settled is not sent to /verify again)."""
    state = FacilitatorState(settle_mode="http500")
    async with running(state) as (fac, st):
        caps = {"settle": '"after"', "debt_limit_total": '"0.03"'}
        a = await paid_gateway(gateway_factory, upstream, fac, store=redis_url, **caps)
        b = await paid_gateway(gateway_factory, upstream, fac, store=redis_url, **caps)
        await a.gateway.services.store.delete(key("x402debt", "total"))
        await a.gateway.services.store.delete(key("x402debt", "net:127.0.0.0/24"))
        got = []
        for i, acct in enumerate(FRESH):
            got.append((await pay(http, url_of(a if i % 2 else b, "/paid/x"), acct))[0])
        assert got == [200, 200, 200, 402, 402]
        state.settle_mode = "ok"
        for _ in range(200):
            if len(st.settled) == 3 and await a.gateway.services.store.get(key("x402debt", "total")) == b"0":
                break
            await asyncio.sleep(0.05)
        assert len(st.settled) == 3
        verifies = st.calls["verify"]
        status, _, _ = await pay(http, url_of(a, "/paid/x"), FRESH[0])
        assert status == 200 and st.calls["verify"] == verifies, "a payer that settled is known"


async def test_payment_header_does_not_reach_the_origin(gateway_factory, upstream, http):
    """settle = after: the origin is reached before settlement, but never sees the
    signed authorization (PAYMENT-SIGNATURE, X-PAYMENT), on paid and free routes;
    forward_payment_header = true forwards it."""
    async with running() as (fac, _):
        r = await paid_gateway(gateway_factory, upstream, fac, settle='"after"')
        status, _, seen = await pay(http, url_of(r, "/paid/x"))
        assert status == 200 and seen["pop"]["PoP-Charged"] == "10000"
        sent = {k.lower() for k in seen["headers"]}
        assert "payment-signature" not in sent
        junk = {"PAYMENT-SIGNATURE": "e30=", "X-PAYMENT": "e30="}
        async with http.get(url_of(r, "/free"), headers=junk) as resp:
            assert resp.status == 200
            sent = {k.lower() for k in (await resp.json())["headers"]}
            assert not sent & {"payment-signature", "x-payment"}
        fwd = await paid_gateway(gateway_factory, upstream, fac, forward_payment_header="true")
        status, _, seen = await pay(http, url_of(fwd, "/paid/x"))
        assert status == 200 and "payment-signature" in {k.lower() for k in seen["headers"]}
