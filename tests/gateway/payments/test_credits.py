"""Prepaid credits through the real gateway: admin API, Bearer debits,
refunds for non-2xx, x402 top-up with the SDK, pay-per-crawl headers."""

from __future__ import annotations

import asyncio
import secrets
import time

import pytest
from aiohttp import web
from eth_account import Account
from x402 import x402Client
from x402.http.clients import x402HttpxClient
from x402.mechanisms.evm.exact.register import register_exact_evm_client

from popgate.gateway.payments.ledger import reconcile
from popgate.verifiers.httpsig import RequestView, jwk_thumbprint
from popgate.verifiers.structured_fields import Item
from tests.conftest import admin_url, url_of
from tests.gateway.schemes.test_webbotauth import static_config
from tests.support.facilitator import running
from tests.support.paid_gateway import ChargePolicy
from tests.support.servers import serve_app
from tests.verifiers.test_webbotauth import PUB, priv, sign_items

TOKEN = "t" * 40
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
async def origin():
    """An origin that answers 500 on /paid/fail and counts what it serves."""
    seen: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        assert "Authorization" not in request.headers, "the popgate API key must not reach the origin"
        seen.append(request.headers.get("PoP-Charged", ""))
        return web.Response(status=500 if request.path.endswith("/fail") else 200, text="ok")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    async with serve_app(app) as port:
        yield f"http://127.0.0.1:{port}", seen


async def credits_gateway(
    factory, upstream: str, tmp_path, fac: str | None = None, more: str = "", store: str = "memory://"
):
    (tmp_path / "admin").write_text(TOKEN)
    extra = (
        more
        + f"""
[credits]
admin_token = {{ secret_file = "{tmp_path / "admin"}" }}
topup_amounts = ["0.10", "1.00"]
"""
    )
    if fac:
        extra += f"""
[x402]
networks = ["eip155:84532"]
pay_to = "{PAY_TO}"
facilitator = "{fac}"
"""
    r = await factory(upstream, extra=extra, store=store)
    r.gateway.policy.policy = ChargePolicy(10_000)
    return r


async def test_admin_keys_bearer_debits_and_ledger(gateway_factory, origin, http, tmp_path):
    """Admin creates a key (shown once) with a balance; each paid request debits
    it; a 500 from the origin is refunded; short balance → 402 with the top-up
    way; the ledger reconciles and usage is per subject."""
    up, seen = origin
    r = await credits_gateway(gateway_factory, up, tmp_path)
    async with http.post(admin_url(r, "/admin/credits/keys"), json={"amount": 25_000}) as resp:
        assert resp.status == 401
    async with http.post(admin_url(r, "/admin/credits/keys"), json={"amount": 25_000}, headers=ADMIN) as resp:
        assert resp.status == 201
        created = await resp.json()
    key, account = created["api_key"], created["account"]
    assert created["balance"] == 25_000 and key.startswith("pgk_")
    auth = {"Authorization": f"Bearer {key}"}
    async with http.get(url_of(r, "/paid/a"), headers=auth) as resp:
        assert resp.status == 200
    async with http.get(url_of(r, "/paid/fail"), headers=auth) as resp:
        assert resp.status == 500
    await asyncio.sleep(0.1)  # the refund runs after the response
    async with http.get(url_of(r, "/paid/b"), headers=auth) as resp:
        assert resp.status == 200
    async with http.get(url_of(r, "/paid/c"), headers=auth) as resp:
        assert resp.status == 402
        body = await resp.json()
        assert body["reason"] == "insufficient_credits"
        way = next(w for w in body["ways_out"] if w["kind"] == "credits")
        assert way["balance"] == 5_000 and way["topup"] == "/.well-known/popgate/credits/topup"
    async with http.get(
        url_of(r, "/paid/a"), headers={"Authorization": "Bearer pgk_" + "0" * 16 + "_" + "A" * 43}
    ) as resp:
        assert resp.status == 401 and (await resp.json())["reason"] == "bad_api_key"
    assert seen == ["10000", "10000", "10000"]
    async with http.get(admin_url(r, f"/admin/credits/accounts/{account}/ledger"), headers=ADMIN) as resp:
        entries = (await resp.json())["entries"]
    assert [e["kind"] for e in entries] == ["topup", "debit", "debit", "refund", "debit"]
    store = r.gateway.services.store
    reconcile(await store.balance(account), await store.ledger(account))
    async with http.get(admin_url(r, f"/admin/credits/accounts/{account}"), headers=ADMIN) as resp:
        info = await resp.json()
    assert info["balance"] == 5_000 and info["usage"]["credits"] == 20_000
    async with http.post(
        admin_url(r, f"/admin/credits/accounts/{account}/topup"), json={"amount_usd": "0.01"}, headers=ADMIN
    ) as resp:
        assert (await resp.json())["balance"] == 15_000
    async with http.delete(admin_url(r, f"/admin/credits/keys/{created['key_id']}"), headers=ADMIN) as resp:
        assert resp.status == 200
    async with http.get(url_of(r, "/paid/a"), headers=auth) as resp:
        assert resp.status == 401


async def test_topup_with_x402_sdk_then_spend(gateway_factory, origin, tmp_path):
    """An agent pays the top-up endpoint with the official SDK, gets a new key
    with the credited balance, then spends it per request without paying again."""
    up, _seen = origin
    async with running() as (fac, st):
        r = await credits_gateway(gateway_factory, up, tmp_path, fac)
        client = x402Client()
        register_exact_evm_client(client, Account.from_key("0x" + "55" * 32))
        async with x402HttpxClient(client) as h:
            resp = await h.post(url_of(r, "/.well-known/popgate/credits/topup?amount=0.10"))
            assert resp.status_code == 200, resp.text
            got = resp.json()
            assert got["credited"] == 100_000 and got["balance"] == 100_000
            assert "PAYMENT-RESPONSE" in resp.headers and len(st.settled) == 1
            for _ in range(3):
                paid = await h.get(
                    url_of(r, "/paid/x"), headers={"Authorization": f"Bearer {got['api_key']}"}
                )
                assert paid.status_code == 200
        assert await r.gateway.services.store.balance(got["account"]) == 70_000
        assert len(st.settled) == 1


def crawl(url: str, prices: dict[str, str], *, cover: bool = True, nonce: bool = True) -> dict[str, str]:
    """A Web Bot Auth request signed with the fixture agent key (tag web-bot-auth)."""
    view = RequestView.build("GET", url, prices)
    items = [Item("@authority", {})] + ([Item(k, {}) for k in prices] if cover else [])
    now = int(time.time())
    params: dict = {
        "created": now,
        "expires": now + 60,
        "keyid": jwk_thumbprint(PUB["agent"]),
        "alg": "ed25519",
        "tag": "web-bot-auth",
    }
    if nonce:
        params["nonce"] = secrets.token_urlsafe(12)
    return {**prices, **sign_items(priv("agent"), view, items, "sig1", **params)}


async def test_pay_per_crawl(gateway_factory, origin, http, tmp_path):
    """A Web Bot Auth crawler with a credit account: crawler-price on the 402,
    crawler-charged on success, crawler-error codes on failures; the price it
    accepts must be covered by its signature, with a nonce."""
    up, _ = origin
    r = await credits_gateway(gateway_factory, up, tmp_path, more=static_config("bot.example"))
    u = url_of(r, "/paid/p")
    async with http.get(u, headers=crawl(u, {})) as resp:
        assert resp.status == 402 and resp.headers["crawler-price"] == "USD 0.01"
    async with http.get(u, headers=crawl(u, {"crawler-max-price": "USD 0.05"})) as resp:
        assert resp.status == 403 and resp.headers["crawler-error"] == "PaymentFailed"
    async with http.post(
        admin_url(r, "/admin/credits/accounts/crawler:bot.example/topup"),
        json={"amount": 25_000},
        headers=ADMIN,
    ) as resp:
        assert resp.status == 200
    async with http.get(u, headers=crawl(u, {"crawler-max-price": "USD 0.05"})) as resp:
        assert resp.status == 200 and resp.headers["crawler-charged"] == "USD 0.01"
    async with http.get(u, headers=crawl(u, {"crawler-exact-price": "USD 0.02"})) as resp:
        assert resp.status == 402 and resp.headers["crawler-error"] == "InvalidCrawlerExactPrice"
    async with http.get(
        u, headers=crawl(u, {"crawler-exact-price": "USD 0.01", "crawler-max-price": "USD 0.01"})
    ) as resp:
        assert resp.status == 400 and resp.headers["crawler-error"] == "ConflictingPriceHeaders"
    async with http.get(u, headers={"crawler-max-price": "USD 0.05"}) as resp:
        assert resp.status == 400 and resp.headers["crawler-error"] == "StrongAuthRequired"
    # consent must be signed: a price added to a signed request, or no nonce, bills nothing
    unsigned_price = {**crawl(u, {}), "crawler-max-price": "USD 0.05"}
    async with http.get(u, headers=unsigned_price) as resp:
        assert resp.status == 400 and resp.headers["crawler-error"] == "StrongAuthRequired"
    async with http.get(u, headers=crawl(u, {"crawler-max-price": "USD 0.05"}, nonce=False)) as resp:
        assert resp.status == 400 and resp.headers["crawler-error"] == "StrongAuthRequired"
    fail = url_of(r, "/paid/fail")
    async with http.get(fail, headers=crawl(fail, {"crawler-max-price": "USD 0.05"})) as resp:
        assert resp.status == 500 and "crawler-charged" not in resp.headers
    await asyncio.sleep(0.1)
    assert await r.gateway.services.store.balance("crawler:bot.example") == 15_000
    async with http.get(admin_url(r, "/admin/fees/crawler:bot.example"), headers=ADMIN) as resp:
        assert (await resp.json())["spent"]["crawler"] == 10_000


async def test_admin_api_with_the_store_down_answers_503_with_retry_after(
    gateway_factory, origin, http, tmp_path
):
    """The admin credits API fails closed like the proxy does: 503
    ``store_unavailable`` with Retry-After (a client or script knows when to retry)."""
    from tests.support.servers import free_port

    (tmp_path / "admin").write_text(TOKEN)
    extra = f'[credits]\nadmin_token = {{ secret_file = "{tmp_path / "admin"}" }}\n'
    r = await gateway_factory(origin[0], extra=extra, store=f"redis://127.0.0.1:{free_port()}/0")
    for method, path, body in (
        ("POST", "/admin/credits/keys", {"amount": 5}),
        ("POST", "/admin/credits/accounts/key:x/topup", {"amount": 5, "ref": "r"}),
        ("GET", "/admin/credits/accounts/key:x/ledger", None),
    ):
        async with http.request(method, admin_url(r, path), json=body, headers=ADMIN) as resp:
            assert resp.status == 503, (path, resp.status)
            assert (await resp.json())["reason"] == "store_unavailable"
            assert resp.headers["Retry-After"] == "2", path
