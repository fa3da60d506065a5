"""Helpers for the x402 ``upto`` tests: an origin that reports usage in a
header, the gateway config, and hand-signed Permit2 payloads (eth-account's
generic EIP-712 signer, so any field can be set wrong on purpose)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from aiohttp import web
from eth_account import Account
from eth_account.messages import encode_typed_data
from x402.mechanisms.evm.constants import X402_UPTO_PERMIT2_PROXY_ADDRESS

from popgate.verifiers.x402 import USDC, encode_header
from tests.support.upto_facilitator import FACILITATOR_ADDRESS, upto_typed_data

PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
NETWORK = "eip155:84532"
USAGE_HEADER = "X-Usage-Tokens"
UNIT = 100  # atomic units per unit of usage ("0.0001")
MAX = 5000  # atomic units authorized per request ("0.005")
PRICE = 1000  # the route's fixed price (exact, credits)
HITS = web.AppKey("hits", list[str])  # the origin's log of the requests it served


def toml(fac: str, x402_extra: str = "") -> str:
    return f"""
[x402]
networks = ["{NETWORK}"]
pay_to = "{PAY_TO}"
facilitator = "{fac}"
{x402_extra}

[x402.upto]
facilitator_address = "{FACILITATOR_ADDRESS}"

[x402.upto.routes.paid]
usage_header = "{USAGE_HEADER}"
unit_price = "0.0001"
max = "0.005"
"""


def origin_app() -> web.Application:
    """``GET /paid/...?usage=N|none|dup|abc&status=S``: answers ``status`` with the
    usage header as asked, and the PoP-* headers it was sent."""

    hits: list[str] = []

    async def handler(request: web.Request) -> web.Response:
        hits.append(request.path_qs)
        q = request.query
        pop = {k: v for k, v in request.headers.items() if k.lower().startswith("pop-")}
        resp = web.json_response({"served": True, "pop": pop}, status=int(q.get("status", "200")))
        usage = q.get("usage", "none")
        if usage == "dup":
            resp.headers.add(USAGE_HEADER, "1")
            resp.headers.add(USAGE_HEADER, "1")
        elif usage != "none":
            resp.headers[USAGE_HEADER] = usage
        return resp

    app = web.Application()
    app[HITS] = hits
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


def requirements(**changes: Any) -> dict[str, Any]:
    """The ``upto`` offer the gateway makes on the ``paid`` route (as JSON)."""
    usdc = USDC[NETWORK]
    req = {
        "scheme": "upto",
        "network": NETWORK,
        "asset": usdc.address,
        "amount": str(MAX),
        "payTo": PAY_TO,
        "maxTimeoutSeconds": 300,
        "extra": {
            "assetTransferMethod": "permit2",
            "name": usdc.name,
            "version": usdc.version,
            "facilitatorAddress": FACILITATOR_ADDRESS,
        },
    }
    req.update(changes)
    return req


def signed_payment(
    key: str, *, chain_network: str = NETWORK, accepted: dict[str, Any] | None = None, **auth: Any
) -> str:
    """A ``PAYMENT-SIGNATURE`` value: an upto Permit2 authorization of the offer,
    ``auth`` overriding fields (``amount``, ``token``, ``spender``, ``to``,
    ``facilitator``, ``deadline``, ``nonce``, ``valid_after``), signed for ``chain_network``."""
    acct = Account.from_key(key)
    req = accepted or requirements()
    a = {
        "from": acct.address,
        "permitted": {
            "token": auth.get("token", req["asset"]),
            "amount": str(auth.get("amount", req["amount"])),
        },
        "spender": auth.get("spender", X402_UPTO_PERMIT2_PROXY_ADDRESS),
        "nonce": str(auth.get("nonce", secrets.randbits(256))),
        "deadline": str(auth.get("deadline", int(time.time()) + 300)),
        "witness": {
            "to": auth.get("to", req["payTo"]),
            "facilitator": auth.get("facilitator", FACILITATOR_ADDRESS),
            "validAfter": str(auth.get("valid_after", 0)),
        },
    }
    signed = Account.sign_message(encode_typed_data(full_message=upto_typed_data(a, chain_network)), key)
    payload = {"permit2Authorization": a, "signature": "0x" + bytes(signed.signature).hex()}
    return encode_header({"x402Version": 2, "accepted": req, "payload": payload})
