"""Credits over HTTP: the admin API (admin listener) and the x402 top-up.

Admin API, all behind ``Authorization: Bearer <[credits] admin_token>``
(compared in constant time; without a configured token the routes are not
mounted). Amounts are atomic units (6 decimals) in and out; ``amount_usd``
("0.50") is accepted on input.

* ``POST /admin/credits/keys`` ``{"amount_usd"?: "1.00"}`` → 201
  ``{api_key, key_id, account, balance}``: the key is shown this once.
* ``DELETE /admin/credits/keys/{key_id}``: revoke.
* ``POST /admin/credits/accounts/{account}/topup`` ``{"amount"|"amount_usd", "ref"?}``
* ``GET /admin/credits/accounts/{account}``: balance and usage per rail.
* ``GET /admin/credits/accounts/{account}/ledger?since=0&limit=100``
* ``GET /admin/fees/{subject}``: what a subject spent, per rail
  (``key:<id>``, ``crawler:<subject>``, ``x402:<payer address>``).
* ``GET /admin/settlements``: pending x402 settlements.

Top-up (proxy listener, bypasses the pipeline):
``POST /.well-known/popgate/credits/topup[?amount=1.00]`` paid with x402.
Without a payment: 402 with ``PAYMENT-REQUIRED`` offering each configured
amount. With one: verified, reserved, **settled first**, then credited with
ref ``x402:<network>:<payer>:<nonce>`` (idempotent) to the account of the
presented ``Authorization: Bearer`` key, or to a new key returned once.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from popgate.gateway.errors import GatewayError, StoreFailure
from popgate.gateway.payments.credits import TOPUP_PATH, account_of_key
from popgate.gateway.payments.ledger import bearer_key, issue_api_key
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.responses import error_response, problem
from popgate.gateway.registry import Registry, Services
from popgate.gateway.stores.base import StoreUnavailable, key
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.x402 import (
    PAYMENT_REQUIRED,
    PAYMENT_RESPONSE,
    X_PAYMENT_RESPONSE,
    encode_payment_response,
    usd_to_atomic,
)

if TYPE_CHECKING:  # fees registers this module
    from popgate.gateway.payments.fees import Meter

MAX_ATOMIC = 10**15


def _json(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(obj).encode(),
        content_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def _amount(body: dict[str, Any]) -> int:
    if "amount" in body:
        v = body["amount"]
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError("amount must be an integer (atomic units)")
    elif "amount_usd" in body:
        v = usd_to_atomic(str(body["amount_usd"]))
    else:
        raise ValueError("amount or amount_usd required")
    if not 0 < v <= MAX_ATOMIC:
        raise ValueError("amount out of range")
    return v


def register_credits_api(
    registry: Registry, services: Services, meter: Meter, x402: Any, credits: Any, enforcer: Any
) -> None:
    """Mount the admin routes and the top-up endpoint (where configured)."""
    store = services.store
    token = credits.settings.admin_token if credits is not None else None

    def authorized(request: web.Request) -> bool:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        presented = value.strip().encode() if scheme.lower() == "bearer" else b""
        if token is None:
            return False  # no admin token configured: nobody is
        return hmac.compare_digest(presented, token)

    def admin(
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def guarded(request: web.Request) -> web.StreamResponse:
            if not authorized(request):
                return problem(
                    request,
                    401,
                    "admin_token_required",
                    "Admin token required",
                    headers={"WWW-Authenticate": 'Bearer realm="popgate-admin"'},
                )
            try:
                return await handler(request)
            except (ValueError, TypeError, KeyError) as exc:
                return problem(request, 400, "bad_request", "Bad request", str(exc))
            except StoreUnavailable:
                return error_response(request, StoreFailure())  # 503 + Retry-After, like the proxy

        return guarded

    async def body_of(request: web.Request) -> dict[str, Any]:
        if not request.can_read_body:
            return {}
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        return body

    async def usage(subject: str) -> dict[str, int]:
        return await meter.usage(subject)

    async def create_key(request: web.Request) -> web.Response:
        body = await body_of(request)
        issued = issue_api_key()
        await store.set(key("apikey", issued.key_id), issued.key_hash)
        account = account_of_key(issued.key_id)
        balance = 0
        if "amount" in body or "amount_usd" in body:
            balance = await store.credit_ledger(
                account, _amount(body), "topup", f"admin:create:{issued.key_id}", services.clock()
            )
        return _json(
            {"api_key": issued.key, "key_id": issued.key_id, "account": account, "balance": balance}, 201
        )

    async def revoke_key(request: web.Request) -> web.Response:
        key_id = request.match_info["key_id"]
        await store.delete(key("apikey", key_id))
        if credits is not None:
            credits.forget_key(key_id)  # other gateways forget within their cache TTL
        return _json({"key_id": key_id, "revoked": True})

    async def topup(request: web.Request) -> web.Response:
        account = request.match_info["account"]
        body = await body_of(request)
        ref = body.get("ref", "")
        if not isinstance(ref, str) or len(ref) > 200:
            raise ValueError("ref must be a string of at most 200 characters")
        bal = await store.credit_ledger(
            account, _amount(body), "topup", f"admin:{ref}" if ref else "", services.clock()
        )
        return _json({"account": account, "balance": bal})

    async def account_info(request: web.Request) -> web.Response:
        account = request.match_info["account"]
        return _json(
            {"account": account, "balance": await store.balance(account), "usage": await usage(account)}
        )

    async def ledger(request: web.Request) -> web.Response:
        account = request.match_info["account"]
        since = int(request.query.get("since", "0"))
        limit = min(max(int(request.query.get("limit", "100")), 1), 10_000)
        entries = await store.ledger(account, since, limit)
        return _json(
            {
                "account": account,
                "entries": [
                    {
                        "seq": e.seq,
                        "delta": e.delta,
                        "balance_after": e.balance_after,
                        "kind": e.kind,
                        "ref": e.ref,
                        "at": e.at,
                    }
                    for e in entries
                ],
            }
        )

    async def fees(request: web.Request) -> web.Response:
        subject = request.match_info["subject"]
        return _json({"subject": subject, "spent": await usage(subject)})

    async def settlements(request: web.Request) -> web.Response:
        if x402 is None:
            return _json({"pending": []})
        queue = await x402.queue()
        items = await queue.pending()
        return _json(
            {
                "pending": [
                    {
                        "id": i.id,
                        "payer": i.payer,
                        "network": i.network,
                        "amount": i.amount,
                        "attempts": i.attempts,
                        "transaction": i.transaction,
                        "last_error": i.last_error,
                    }
                    for i in items[:1000]
                ]
            }
        )

    if token is not None:
        registry.admin_routes.extend(
            [
                ("POST", "/admin/credits/keys", admin(create_key)),
                ("DELETE", "/admin/credits/keys/{key_id}", admin(revoke_key)),
                ("POST", "/admin/credits/accounts/{account}/topup", admin(topup)),
                ("GET", "/admin/credits/accounts/{account}", admin(account_info)),
                ("GET", "/admin/credits/accounts/{account}/ledger", admin(ledger)),
                ("GET", "/admin/fees/{subject}", admin(fees)),
                ("GET", "/admin/settlements", admin(settlements)),
            ]
        )
    if credits is not None and x402 is not None:
        registry.endpoints[TOPUP_PATH] = _topup_endpoint(services, meter, x402, credits)


def _topup_endpoint(services: Services, meter: Any, x402: Any, credits: Any) -> Any:
    amounts = credits.settings.topup_amounts

    async def handler(request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        if request.method != "POST":
            return problem(
                request, 405, "method_not_allowed", "Method not allowed", headers={"Allow": "POST"}
            )
        try:
            return await _topup(request, ctx)
        except GatewayError as exc:
            return error_response(request, exc)

    async def _topup(request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        chosen = amounts
        if "amount" in request.query:
            try:
                want = usd_to_atomic(request.query["amount"])
            except ValueError:
                want = -1
            if want not in amounts:
                return problem(
                    request,
                    400,
                    "bad_amount",
                    "Unsupported top-up amount",
                    f"offered: {', '.join(str(a) for a in amounts)} (atomic units)",
                )
            chosen = (want,)
        offers = [o for a in chosen for o in x402.offers(a)]
        try:
            payment = x402.extract(request.headers)
        except Malformed:
            return problem(
                request, 400, "malformed_payment", "Bad request", "The payment header could not be decoded."
            )

        def ask(error: str | None = None, extra: dict[str, str] | None = None) -> web.Response:
            header = x402.required_header(request, offers, error, "popgate credits top-up")
            return problem(
                request,
                402,
                "payment_required",
                "Payment required",
                "Pay one of the offered amounts to add credits.",
                {"accepts": [o.to_json() for o in offers], **({"error": error} if error else {})},
                {PAYMENT_REQUIRED: header, **(extra or {})},
            )

        if payment is None:
            return ask()
        presented = bearer_key(request.headers.get("Authorization"))
        account = (await credits.account_for_key(presented, ctx.now)) if presented else None
        try:
            paid = await x402.verify(payment, offers, ctx.now)
        except VerificationError as exc:
            return ask(exc.reason)
        header_name = PAYMENT_RESPONSE if payment.version == 2 else X_PAYMENT_RESPONSE
        # The settlement record carries the credit (and the new key's hash):
        # whoever concludes the settlement, this request or a worker after a
        # crash, credits it (idempotent ref).
        out: dict[str, Any] = {}
        store = services.store
        steps: list[Callable[[], Awaitable[object]]] = []
        issued = issue_api_key() if account is None else None
        to = account_of_key(issued.key_id) if issued is not None else str(account)
        ref = f"x402:{paid.network}:{paid.payer.lower()}:{paid.nonce}"
        if issued is not None:
            new_key = issued
            steps.append(lambda: store.set(key("apikey", new_key.key_id), new_key.key_hash))
            credit = (to, ref, issued.key_id, issued.key_hash.hex())
        else:
            credit = (to, ref, "", "")
        try:
            result = await x402.settle_first(paid, ctx.now, credit)
        except VerificationError as exc:
            res = getattr(exc, "result", None)
            return ask(exc.reason, {header_name: encode_payment_response(res)} if res else None)
        # Settled (or broadcast): money moved. From here a store failure never
        # refuses the top-up: the client gets its key and receipt now (202
        # credit_pending), the key and credit are written when the store answers.
        if issued is not None:
            out.update(api_key=issued.key, key_id=issued.key_id)
        balance: list[int | None] = [None]
        amount, at = paid.amount, ctx.now

        async def credit_now() -> None:
            balance[0] = await store.credit_ledger(to, amount, "topup", ref, at)

        steps.append(credit_now)
        queue = await x402.queue()
        credited = await queue.run_steps("top-up credit", steps)
        services.metrics.payments.labels("x402", "topup").inc()
        await meter.record("x402", "credits-topup", f"x402:{paid.payer.lower()}", paid.amount)
        out.update(account=to, credited=paid.amount, balance=balance[0])
        if not credited:
            services.metrics.store_errors.labels("payment_settled").inc()
            out["credit_pending"] = True
        return _json(out, 200 if credited else 202, {header_name: encode_payment_response(result)})

    return handler
