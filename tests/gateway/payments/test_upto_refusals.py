"""x402 ``upto`` refusals through the real gateway: a bad authorization never
reaches the origin; a replayed Permit2 nonce is refused on every gateway sharing
Redis; an answer whose usage report is missing, malformed or above the
authorized maximum is refused and nothing is settled; origin 5xx settles nothing."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from eth_account import Account
from x402.http.utils import decode_payment_required_header, decode_payment_response_header

from tests.conftest import url_of
from tests.support.facilitator import running
from tests.support.paid_gateway import ChargePolicy
from tests.support.servers import serve_app
from tests.support.upto import (
    HITS,
    MAX,
    PRICE,
    UNIT,
    USAGE_HEADER,
    origin_app,
    requirements,
    signed_payment,
    toml,
)

KEY = "0x" + "79" * 32
PAYER = Account.from_key(KEY).address


@pytest.fixture
async def origin() -> AsyncIterator[tuple[str, list[str]]]:
    app = origin_app()
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}", app[HITS]


async def gateway(factory: Any, origin: str, fac: str, store: str = "memory://", x402_extra: str = "") -> Any:
    r = await factory(origin, extra=toml(fac, x402_extra), store=store)
    r.gateway.policy.policy = ChargePolicy(PRICE)
    return r


def _tampered_nonce(header: str) -> str:
    obj = json.loads(base64.b64decode(header))
    obj["payload"]["permit2Authorization"]["nonce"] = "12345"
    return base64.b64encode(json.dumps(obj).encode()).decode()


CASES = {
    "wrong chain in the signed domain": (
        lambda: signed_payment(KEY, chain_network="eip155:8453"),
        "bad_signature",
    ),
    "field changed after signing": (lambda: _tampered_nonce(signed_payment(KEY)), "bad_signature"),
    "wrong spender": (lambda: signed_payment(KEY, spender="0x" + "11" * 20), "spender_mismatch"),
    "wrong token": (lambda: signed_payment(KEY, token="0x" + "22" * 20), "token_mismatch"),
    "wrong payee": (lambda: signed_payment(KEY, to="0x" + "33" * 20), "payto_mismatch"),
    "wrong facilitator": (lambda: signed_payment(KEY, facilitator="0x" + "44" * 20), "facilitator_mismatch"),
    "expired deadline": (lambda: signed_payment(KEY, deadline=int(time.time()) - 5), "expired"),
    "not yet valid": (lambda: signed_payment(KEY, valid_after=int(time.time()) + 600), "not_yet_valid"),
    "max below the route's": (lambda: signed_payment(KEY, amount=MAX - 1), "amount_mismatch"),
    "max above the route's": (lambda: signed_payment(KEY, amount=MAX + 1), "amount_mismatch"),
    "chain not offered": (
        lambda: signed_payment(KEY, accepted=requirements(network="eip155:8453")),
        "wrong_network",
    ),
    "offer changed": (
        lambda: signed_payment(KEY, accepted=requirements(amount="1")),
        "requirements_mismatch",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_bad_authorization_never_reaches_the_origin(
    gateway_factory: Any, origin: Any, http: Any, case: str
) -> None:
    make, reason = CASES[case]
    async with running() as (fac, st):
        r = await gateway(gateway_factory, origin[0], fac)
        async with http.get(url_of(r, "/paid/llm?usage=1"), headers={"PAYMENT-SIGNATURE": make()}) as resp:
            assert resp.status == 402
            required = decode_payment_required_header(resp.headers["PAYMENT-REQUIRED"])
        assert required.error == reason
        assert "upto" in [a.scheme for a in required.accepts]
        assert origin[1] == [] and st.calls["verify"] == 0 and st.calls["settle"] == 0


async def test_a_nonce_is_spent_once_across_two_gateways_on_one_redis(
    gateway_factory: Any, origin: Any, http: Any, redis_url: str
) -> None:
    async with running() as (fac, st):
        a = await gateway(gateway_factory, origin[0], fac, store=redis_url)
        b = await gateway(gateway_factory, origin[0], fac, store=redis_url)
        header = signed_payment(KEY)

        async def get(gw: Any) -> int:
            async with http.get(
                url_of(gw, "/paid/llm?usage=3"), headers={"PAYMENT-SIGNATURE": header}
            ) as resp:
                if resp.status == 402:
                    assert (
                        decode_payment_required_header(resp.headers["PAYMENT-REQUIRED"]).error
                        == "nonce_reused"
                    )
                return resp.status

        statuses = await asyncio.gather(*(get(gw) for gw in [a, b] * 10))
        assert sorted(statuses) == [200] + [402] * 19
        assert len(origin[1]) == 1
        assert [s["value"] for s in st.settled] == [str(3 * UNIT)]


USAGE_REFUSALS = {
    "none": "upstream_usage_invalid",
    "abc": "upstream_usage_invalid",
    "-1": "upstream_usage_invalid",
    "1.5": "upstream_usage_invalid",
    "dup": "upstream_usage_invalid",
    str(MAX // UNIT + 1): "usage_exceeds_max",
}


@pytest.mark.parametrize("usage", list(USAGE_REFUSALS))
async def test_a_bad_usage_report_settles_nothing(
    gateway_factory: Any, origin: Any, http: Any, usage: str
) -> None:
    async with running() as (fac, st):
        r = await gateway(gateway_factory, origin[0], fac)
        headers = {"PAYMENT-SIGNATURE": signed_payment(KEY)}
        async with http.get(url_of(r, f"/paid/llm?usage={usage}"), headers=headers) as resp:
            assert resp.status == 502
            assert resp.headers["Content-Type"].startswith("application/problem+json")
            body = await resp.json(content_type=None)
            assert "PAYMENT-RESPONSE" not in resp.headers and "PoP-Charged" not in resp.headers
            assert USAGE_HEADER not in resp.headers
        assert (
            body["reason"] == USAGE_REFUSALS[usage] and "served" not in body
        )  # the origin's body is not delivered
        assert len(origin[1]) == 1 and st.calls["verify"] == 1
        assert st.calls["settle"] == 0 and st.settled == []


@pytest.mark.parametrize("status", [500, 503, 404])
async def test_an_origin_error_settles_nothing(
    gateway_factory: Any, origin: Any, http: Any, status: int
) -> None:
    async with running() as (fac, st):
        r = await gateway(gateway_factory, origin[0], fac)
        headers = {"PAYMENT-SIGNATURE": signed_payment(KEY)}
        async with http.get(url_of(r, f"/paid/llm?usage=2&status={status}"), headers=headers) as resp:
            assert resp.status == status  # the origin's own answer, unbilled
            assert (await resp.json())["served"] is True
            assert "PAYMENT-RESPONSE" not in resp.headers and "PoP-Charged" not in resp.headers
        assert st.calls["settle"] == 0 and st.settled == []


async def test_a_facilitator_rejection_releases_the_nonce(
    gateway_factory: Any, origin: Any, http: Any
) -> None:
    async with running() as (fac, st):
        r = await gateway(gateway_factory, origin[0], fac)
        header = signed_payment(KEY)
        st.no_permit2_allowance.add(PAYER.lower())
        async with http.get(url_of(r, "/paid/llm?usage=1"), headers={"PAYMENT-SIGNATURE": header}) as resp:
            assert resp.status == 402
            error = decode_payment_required_header(resp.headers["PAYMENT-REQUIRED"]).error
        assert error == "permit2_allowance_required" and origin[1] == []
        st.no_permit2_allowance.clear()  # the payer approves Permit2, then retries the same authorization
        async with http.get(url_of(r, "/paid/llm?usage=1"), headers={"PAYMENT-SIGNATURE": header}) as resp:
            assert resp.status == 200 and resp.headers["PoP-Charged"] == str(UNIT)


async def test_a_refused_settlement_withholds_the_answer(
    gateway_factory: Any, origin: Any, http: Any
) -> None:
    async with running() as (fac, st):
        r = await gateway(gateway_factory, origin[0], fac)
        st.settle_mode = "fail"
        headers = {"PAYMENT-SIGNATURE": signed_payment(KEY)}
        async with http.get(url_of(r, "/paid/llm?usage=4"), headers=headers) as resp:
            assert resp.status == 402
            body = await resp.json(content_type=None)
            settled = decode_payment_response_header(resp.headers["PAYMENT-RESPONSE"])
        assert body["reason"] == "settlement_failed" and "served" not in body
        assert not settled.success and settled.error_reason == "invalid_upto_evm_transaction_failed"


async def test_an_unanswered_settlement_is_queued_and_retried(
    gateway_factory: Any, origin: Any, http: Any, redis_url: str
) -> None:
    async with running() as (fac, st):
        r = await gateway(
            gateway_factory,
            origin[0],
            fac,
            store=redis_url,
            x402_extra="settle_interval = 0.1\nretry_backoff = 0.1",
        )
        st.settle_mode = "http500"
        headers = {"PAYMENT-SIGNATURE": signed_payment(KEY)}
        async with http.get(url_of(r, "/paid/llm?usage=6"), headers=headers) as resp:
            assert resp.status == 200 and (await resp.json())["served"] is True
            assert resp.headers["PoP-Charged"] == str(6 * UNIT) and "PAYMENT-RESPONSE" not in resp.headers
        assert st.settled == []
        st.settle_mode = "ok"  # the worker settles the queued record
        deadline = time.monotonic() + 10
        while not st.settled and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [s["value"] for s in st.settled] == [str(6 * UNIT)]


async def test_no_upto_off_its_routes(gateway_factory: Any, origin: Any, http: Any) -> None:
    """A route without [x402.upto.routes.<route>] neither offers nor takes upto."""
    async with running() as (fac, st):
        r = await gateway(gateway_factory, origin[0], fac)
        r.gateway.policy.policy = ChargePolicy(PRICE, route="other")
        async with http.get(url_of(r, "/paid/llm")) as resp:
            required = decode_payment_required_header(resp.headers["PAYMENT-REQUIRED"])
        assert [a.scheme for a in required.accepts] == ["exact"]
        headers = {"PAYMENT-SIGNATURE": signed_payment(KEY)}
        async with http.get(url_of(r, "/paid/llm?usage=1"), headers=headers) as resp:
            assert resp.status == 402
            assert (
                decode_payment_required_header(resp.headers["PAYMENT-REQUIRED"]).error == "unsupported_scheme"
            )
        assert origin[1] == [] and st.calls["verify"] == 0


async def test_a_settle_that_went_through_unanswered_is_not_lost(
    gateway_factory: Any, origin: Any, http: Any, redis_url: str
) -> None:
    """popgate hangs up on a slow /settle that the facilitator then carries out; the
    worker's retry is answered "nonce used" and, the record being ambiguous, counted
    as settled: kept in no dead-letter, settled once."""
    import redis.asyncio as aioredis

    async with running() as (fac, st):
        extra = "settle_interval = 0.1\nretry_backoff = 1.0\nsettle_timeout = 0.3"
        r = await gateway(gateway_factory, origin[0], fac, store=redis_url, x402_extra=extra)
        headers = {"PAYMENT-SIGNATURE": signed_payment(KEY)}
        st.answer_delay = 0.6
        async with http.get(url_of(r, "/paid/llm?usage=2"), headers=headers) as resp:
            assert resp.status == 200 and "PAYMENT-RESPONSE" not in resp.headers
        st.answer_delay = 0.0
        client = aioredis.Redis.from_url(redis_url)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                items = [k async for k in client.scan_iter("pg:{x402q:item:*")]
                if not items and st.calls["settle"] >= 2:
                    break
                await asyncio.sleep(0.05)
            dead = [k async for k in client.scan_iter("pg:{x402q:dead:*")]
            done = [k async for k in client.scan_iter("pg:{x402q:done:*")]
        finally:
            await client.aclose()
        assert st.calls["settle"] == 2 and items == [] and dead == [] and len(done) == 1
        assert [s["value"] for s in st.settled] == [str(2 * UNIT)]


async def test_facilitator_down_is_503_and_the_authorization_stays_usable(
    gateway_factory: Any, origin: Any, http: Any
) -> None:
    async with running() as (fac, st):
        r = await gateway(gateway_factory, origin[0], fac)
        header = signed_payment(KEY)
        st.verify_mode = "http500"
        async with http.get(url_of(r, "/paid/llm?usage=1"), headers={"PAYMENT-SIGNATURE": header}) as resp:
            assert resp.status == 503 and "Retry-After" in resp.headers
            assert (await resp.json(content_type=None))["reason"] == "facilitator_unavailable"
        assert origin[1] == []
        st.verify_mode = "ok"
        async with http.get(url_of(r, "/paid/llm?usage=1"), headers={"PAYMENT-SIGNATURE": header}) as resp:
            assert resp.status == 200 and resp.headers["PoP-Charged"] == str(UNIT)
