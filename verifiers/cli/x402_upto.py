"""``popgate verify x402-upto``: offline check of one x402 ``upto`` (Permit2) authorization.

Case: ``{"header_value": <base64 PAYMENT-SIGNATURE>, "requirements":
[PaymentRequirements JSON...], "now": unix_seconds}``. Output adds ``payer``
(EIP-55), ``network``, ``max_amount`` (what may be settled at most),
``nonce`` (the Permit2 nonce, decimal) and ``signature_checked`` (false: a
smart-wallet signature only the facilitator can judge). The same
:func:`verifiers.x402_upto.verify_upto` the gateway runs; a nonce presented
earlier in the same run gives ``nonce_reused``. Offline: the payer's balance
and Permit2 allowance are the facilitator's ``/verify`` to check.
"""

from __future__ import annotations

from typing import Any

from popgate.verifiers.x402 import Requirements, parse_payment_signature
from popgate.verifiers.x402_upto import verify_upto


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    value, reqs = case["header_value"], case["requirements"]
    if not isinstance(value, str):
        raise TypeError("header_value must be a string")
    if not isinstance(reqs, list) or not reqs:
        raise TypeError("requirements must be a non-empty list")
    offered = [Requirements.from_json(r, "requirements[]") for r in reqs]
    result = verify_upto(parse_payment_signature(value), offered, env.now)
    await env.spend(result.spend)
    return {
        "payer": result.payer,
        "network": result.network,
        "max_amount": str(result.max_amount),
        "nonce": str(result.nonce),
        "signature_checked": result.signature_checked,
    }
