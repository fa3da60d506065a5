"""``popgate verify x402-batch``: one batch-settlement payment per line.

Case: ``{"requirements": <PaymentRequirements> (or a list), "header_value":
<base64 PAYMENT-SIGNATURE>, "channel_state": <the server's record before
this request, SDK shape: channelConfig, chargedCumulativeAmount, balance,
totalClaimed, withdrawRequestedAt, refundNonce; or null>, "onchain": <balance,
totalClaimed, withdrawRequestedAt, pendingWithdrawalAmount, refundNonce,
payerTokenBalance; or null>, "now": unix}``. Output: ``valid``, ``reason``
(the scheme's ``invalid_batch_settlement_evm_*`` codes), ``charged_after``
(the channel's charged total after this line, unchanged when refused),
plus ``kind``, ``channel_id`` and ``payer`` when valid.

The check is :func:`verifiers.x402_batch.verify_batch`, the function the
gateway runs under its channel lock. One store per run: a line with
``channel_state: null`` continues from what earlier lines charged on that
channel. Offline: deposit authorizations and EIP-1271 vouchers (zero
``payerAuthorizer``) need the facilitator; the latter are refused with
``..._verification_state_unavailable``.
"""

from __future__ import annotations

import json
from typing import Any

from popgate.verifiers.errors import VerificationError
from popgate.verifiers.spend import key
from popgate.verifiers.x402 import Requirements, parse_payment_signature
from popgate.verifiers.x402_batch import ChainView, verify_batch
from popgate.verifiers.x402_channel import ERR_STATE_UNAVAILABLE, parse_payload


def _offers(raw: Any) -> list[Requirements]:
    items = raw if isinstance(raw, list) else [raw]
    if not items:
        raise TypeError("requirements must not be empty")
    return [Requirements.from_json(r, "requirements") for r in items]


def _view(o: Any) -> ChainView | None:
    if o is None:
        return None
    if not isinstance(o, dict):
        raise TypeError("onchain/channel_state must be an object or null")
    return ChainView.from_json(o)


async def _remembered(env: Any, channel: str) -> dict[str, Any] | None:
    raw = await env.store.get(key("x402-batch-cli", channel))
    return None if raw is None else dict(json.loads(raw))


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    offers = _offers(case["requirements"])
    value = case["header_value"]
    if not isinstance(value, str):
        raise TypeError("header_value must be a string")
    payment = parse_payment_signature(value)
    channel = parse_payload(payment.payload).channel_id
    state = case.get("channel_state")
    if state is None:
        state = await _remembered(env, channel)
    elif not isinstance(state, dict):
        raise TypeError("channel_state must be an object or null")
    charged = None if state is None else int(str(state.get("chargedCumulativeAmount", "0")))
    view = _view(case.get("onchain")) or _view(state)
    try:
        d = verify_batch(payment, offers, charged, view, env.now)
        if d.needs_facilitator:
            raise VerificationError(ERR_STATE_UNAVAILABLE, "EIP-1271 voucher: facilitator needed")
    except VerificationError as exc:
        exc.fields = {"charged_after": str(charged or 0)}  # type: ignore[attr-defined]
        raise
    seen = view or ChainView()
    record = {"chargedCumulativeAmount": str(d.charged_after), "balance": str(seen.balance)}
    record["totalClaimed"] = str(seen.total_claimed)
    record["withdrawRequestedAt"] = str(seen.withdraw_requested_at)
    if d.kind == "deposit":
        record["balance"] = str(seen.balance + d.payload.deposit_amount)
    await env.store.set(key("x402-batch-cli", channel), json.dumps(record).encode())
    return {"charged_after": str(d.charged_after), "kind": d.kind, "channel_id": channel, "payer": d.payer}
