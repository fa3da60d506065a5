"""``popgate verify x402``: offline check of one x402 ``exact`` EVM payment.

Case: ``{"header_name": "PAYMENT-SIGNATURE" | "X-PAYMENT", "header_value":
..., "requirements": [PaymentRequirements JSON...], "now": unix_seconds}``.
Output adds ``payer`` (EIP-55), ``network``, ``amount`` and ``nonce``.

Offline only: no RPC, no facilitator, so a payer with code cannot be told
apart from an EOA here. A nonce presented earlier in the same run gives
``nonce_reused`` (``env.spend``: one store per run). ``X-PAYMENT`` (v1) is
accepted unless ``[x402] accept_v1 = false`` in the config; a v1 payload
sent under ``PAYMENT-SIGNATURE`` is ``malformed`` (it has no ``accepted``
and we never guess the version from the body).
"""

from __future__ import annotations

from typing import Any

from popgate.verifiers.errors import Malformed
from popgate.verifiers.x402 import (
    PAYMENT_SIGNATURE,
    X_PAYMENT,
    Requirements,
    parse_payment_signature,
    parse_x_payment,
)
from popgate.verifiers.x402_exact import ExactVerifier


def _accept_v1(config: Any) -> bool:
    raw = getattr(config, "raw", None)
    if isinstance(raw, dict) and isinstance(raw.get("x402"), dict):  # a loaded popgate config
        return bool(raw["x402"].get("accept_v1", True))
    section = getattr(config, "x402", None)
    return bool(getattr(section, "accept_v1", True))


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    name, value = case["header_name"], case["header_value"]
    if not isinstance(name, str) or not isinstance(value, str):
        raise TypeError("header_name and header_value must be strings")
    reqs = case["requirements"]
    if not isinstance(reqs, list) or not reqs:
        raise TypeError("requirements must be a non-empty list")
    offered = [Requirements.from_json(r, "requirements[]") for r in reqs]
    if name.upper() == PAYMENT_SIGNATURE:
        payment = parse_payment_signature(value)
    elif name.upper() == X_PAYMENT and _accept_v1(env.config):
        payment = parse_x_payment(value)
    else:
        raise Malformed(detail=f"unsupported header {name!r}")
    result = await ExactVerifier().verify(payment, offered, env.now)
    await env.spend(result.spend)
    return {
        "payer": result.payer,
        "network": result.network,
        "amount": str(result.amount),
        "nonce": result.nonce,
    }
