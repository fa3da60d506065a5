"""Wire compatibility with the official x402 SDK, live over loopback.

A small aiohttp app (standing in for the gateway) answers 402 with our
``PAYMENT-REQUIRED``, verifies the paid retry with OUR verifier, settles
through the local test facilitator with OUR client and queue, and answers
200 with ``PAYMENT-RESPONSE``. The clients are the SDK's own httpx and
requests wrappers, signing with a test key on the real clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest
from aiohttp import web
from eth_account import Account
from x402 import x402Client, x402ClientSync
from x402.http.clients import x402HttpxClient
from x402.http.clients.requests import x402_requests
from x402.http.utils import decode_payment_response_header
from x402.mechanisms.evm.exact.register import register_exact_evm_client

from popgate.gateway.payments.facilitator import FacilitatorClient, SettlementQueue
from popgate.gateway.stores.base import spend
from popgate.gateway.stores.memory import MemoryStore
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.x402 import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    encode_header,
    encode_payment_response,
    exact_requirements,
    extract,
    payment_required,
)
from popgate.verifiers.x402_exact import ExactVerifier
from tests.support.facilitator import FacilitatorState, running

KEY = "0x" + "44" * 32
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
QUEUE = web.AppKey("queue", SettlementQueue)


def paid_app(fac_url: str, seen: list[str]) -> web.Application:
    store = MemoryStore(clock=time.time)
    verifier = ExactVerifier()
    offers = [exact_requirements("0.01", "eip155:84532", PAY_TO)]

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as s:
            app[QUEUE] = SettlementQueue(store, FacilitatorClient(s, fac_url))
            yield

    def challenge(request: web.Request, error: str | None = None) -> web.Response:
        pr = payment_required(offers, url=str(request.url), error=error)
        return web.json_response({}, status=402, headers={PAYMENT_REQUIRED: encode_header(pr)})

    async def handler(request: web.Request) -> web.Response:
        try:
            payment = extract(request.headers)
        except Malformed as exc:
            return web.json_response({"reason": exc.reason}, status=400)
        if payment is None:
            return challenge(request)
        try:
            paid = await verifier.verify(payment, offers, time.time())
            await spend(store, paid.spend)
        except VerificationError as exc:
            seen.append(exc.reason)
            return challenge(request, exc.reason)
        seen.append("ok")
        q = request.app[QUEUE]
        item = await q.enqueue(
            payload=payment.raw,
            requirements=paid.requirements.to_json(),
            payer=paid.payer,
            network=paid.network,
            nonce=paid.nonce,
            valid_before=paid.valid_before,
            now=time.time(),
        )
        _, result = await q.settle_now(item, time.time())
        assert result is not None
        headers = {PAYMENT_RESPONSE: encode_payment_response(result)}
        if not result.success:
            return web.json_response({}, status=402, headers=headers)
        return web.json_response({"data": "paid content", "payer": paid.payer}, headers=headers)

    app = web.Application()
    app.cleanup_ctx.append(ctx)
    app.router.add_get("/api/data", handler)
    return app


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def test_sdk_httpx_client_pays() -> None:
    """The SDK's httpx client gets our 402, pays, and decodes our PAYMENT-RESPONSE."""
    async with running() as (fac, st):
        seen: list[str] = []
        runner, base = await serve(paid_app(fac, seen))
        try:
            client = x402Client()
            register_exact_evm_client(client, Account.from_key(KEY))
            async with x402HttpxClient(client) as http:
                r = await http.get(f"{base}/api/data")
            assert r.status_code == 200, r.text
            assert r.json()["payer"] == Account.from_key(KEY).address
            settle = decode_payment_response_header(r.headers[PAYMENT_RESPONSE])
            assert settle.success and settle.network == "eip155:84532"
            assert settle.transaction == st.settled[0]["transaction"]
            assert st.settled[0]["value"] == "10000" and st.settled[0]["to"] == PAY_TO
            assert seen == ["ok"]
        finally:
            await runner.cleanup()


async def test_sdk_requests_client_pays_and_replay_is_refused() -> None:
    """The SDK's requests wrapper pays; resending its exact header is refused."""
    async with running() as (fac, st):
        seen: list[str] = []
        runner, base = await serve(paid_app(fac, seen))
        try:
            client = x402ClientSync()
            register_exact_evm_client(client, Account.from_key(KEY))

            def pay() -> Any:
                with x402_requests(client) as session:
                    return session.get(f"{base}/api/data", timeout=10)

            r = await asyncio.to_thread(pay)
            assert r.status_code == 200 and PAYMENT_RESPONSE in r.headers
            sent = r.request.headers["PAYMENT-SIGNATURE"]
            async with httpx.AsyncClient() as plain:
                again = await plain.get(f"{base}/api/data", headers={"PAYMENT-SIGNATURE": sent})
            assert again.status_code == 402 and seen == ["ok", "nonce_reused"]
            assert len(st.settled) == 1
        finally:
            await runner.cleanup()


async def test_malformed_header_is_400() -> None:
    """Garbage in PAYMENT-SIGNATURE gets 400, not a silent 402."""
    async with running() as (fac, _):
        runner, base = await serve(paid_app(fac, []))
        try:
            async with httpx.AsyncClient() as plain:
                r = await plain.get(f"{base}/api/data", headers={"PAYMENT-SIGNATURE": "%%%"})
            assert r.status_code == 400 and r.json()["reason"] == "malformed"
        finally:
            await runner.cleanup()


@pytest.mark.parametrize("mode", ["fail"])
async def test_settlement_failure_reaches_sdk_as_402(mode: str) -> None:
    """A failed settlement answers 402 with PAYMENT-RESPONSE success=false."""
    async with running(FacilitatorState(settle_mode=mode)) as (fac, _):
        runner, base = await serve(paid_app(fac, []))
        try:
            client = x402Client()
            register_exact_evm_client(client, Account.from_key(KEY))
            async with x402HttpxClient(client) as http:
                r = await http.get(f"{base}/api/data")
            assert r.status_code == 402
            settle = decode_payment_response_header(r.headers[PAYMENT_RESPONSE])
            assert not settle.success and settle.error_reason == "transaction_failed"
        finally:
            await runner.cleanup()
