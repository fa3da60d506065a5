"""The facilitator stand-in's ``upto`` (Permit2) side, as the SDK facilitator
does it (``x402.mechanisms.evm.upto.permit2_utils``): same check order and
reason codes; the signature is checked with eth-account's generic EIP-712
encoder (a second opinion on ``verifiers/permit2.py``). Settling spends the
Permit2 nonce "on chain" and records the settled amount, refusing an amount
above ``permitted.amount``; zero settles without a transaction.
"""

from __future__ import annotations

import hashlib
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from x402.mechanisms.evm.constants import (
    PERMIT2_ADDRESS,
    UPTO_PERMIT2_WITNESS_TYPES,
    X402_UPTO_PERMIT2_PROXY_ADDRESS,
)
from x402.schemas import SettleResponse, VerifyResponse

FACILITATOR_ADDRESS = "0x" + "fa" * 20


def upto_typed_data(a: dict[str, Any], network: str) -> dict[str, Any]:
    """The EIP-712 typed data of an upto ``permit2Authorization``."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            **UPTO_PERMIT2_WITNESS_TYPES,
        },
        "primaryType": "PermitWitnessTransferFrom",
        "domain": {
            "name": "Permit2",
            "chainId": int(network.split(":")[1]),
            "verifyingContract": PERMIT2_ADDRESS,
        },
        "message": {
            "permitted": {"token": a["permitted"]["token"], "amount": int(a["permitted"]["amount"])},
            "spender": a["spender"],
            "nonce": int(a["nonce"]),
            "deadline": int(a["deadline"]),
            "witness": {
                "to": a["witness"]["to"],
                "facilitator": a["witness"]["facilitator"],
                "validAfter": int(a["witness"]["validAfter"]),
            },
        },
    }


def check(state: Any, body: dict[str, Any], amount: str | None = None) -> tuple[str | None, str]:
    """``(invalid_reason, payer)`` for an upto verify; ``amount``: the required
    ``permitted.amount`` (default: the requirements' amount, as ``/verify``)."""
    payload, req = body["paymentPayload"], body["paymentRequirements"]
    a = payload["payload"]["permit2Authorization"]
    payer = a["from"]
    if payload["accepted"]["scheme"] != "upto" or req["scheme"] != "upto":
        return "invalid_upto_evm_scheme", payer
    if payload["accepted"]["network"] != req["network"]:
        return "invalid_upto_evm_network_mismatch", payer
    if a["spender"].lower() != X402_UPTO_PERMIT2_PROXY_ADDRESS.lower():
        return "invalid_permit2_spender", payer
    if a["witness"]["to"].lower() != req["payTo"].lower():
        return "invalid_permit2_recipient_mismatch", payer
    if a["witness"]["facilitator"].lower() != FACILITATOR_ADDRESS:
        return "upto_facilitator_mismatch", payer
    now = int(state.clock())
    if int(a["deadline"]) < now + 6:
        return "permit2_deadline_expired", payer
    if int(a["witness"]["validAfter"]) > now:
        return "permit2_not_yet_valid", payer
    if int(a["permitted"]["amount"]) != int(amount if amount is not None else req["amount"]):
        return "permit2_amount_mismatch", payer
    if a["permitted"]["token"].lower() != req["asset"].lower():
        return "permit2_token_mismatch", payer
    try:
        typed = upto_typed_data(a, req["network"])
        signer = Account.recover_message(
            encode_typed_data(full_message=typed), signature=payload["payload"]["signature"]
        )
        ok = str(signer).lower() == payer.lower()
    except Exception:
        ok = False
    if not ok:
        return "invalid_permit2_signature", payer
    if (req["network"], payer.lower(), "permit2:" + a["nonce"]) in state.spent:
        return "permit2_invalid_nonce", payer
    if payer.lower() in state.no_permit2_allowance:
        return "permit2_allowance_required", payer
    if state.funded is not None and payer.lower() not in state.funded:
        return "permit2_insufficient_balance", payer
    return None, payer


def upto_verify(state: Any, body: dict[str, Any]) -> dict[str, Any]:
    reason, payer = check(state, body)
    out = VerifyResponse(is_valid=reason is None, invalid_reason=reason, payer=payer)
    return out.model_dump(by_alias=True, exclude_none=True)


def upto_settle(state: Any, body: dict[str, Any]) -> dict[str, Any]:
    req = body["paymentRequirements"]
    a = body["paymentPayload"]["payload"]["permit2Authorization"]
    net, payer, amount = req["network"], a["from"], int(req["amount"])
    reason, _ = check(state, body, amount=a["permitted"]["amount"])  # re-verified against the max
    if reason is None and state.settle_mode == "fail":
        reason = "invalid_upto_evm_transaction_failed"
    if reason is None and amount > int(a["permitted"]["amount"]):
        reason = "invalid_upto_evm_payload_settlement_exceeds_amount"
    if reason is not None:
        out = SettleResponse(success=False, error_reason=reason, transaction="", network=net, payer=payer)
        return out.model_dump(by_alias=True, exclude_none=True)
    tx = ""
    if amount:
        nkey = (net, payer.lower(), "permit2:" + a["nonce"])
        state.spent.add(nkey)
        tx = "0x" + hashlib.sha256(repr(nkey).encode()).hexdigest()
        state.settled.append(
            {
                "scheme": "upto",
                "network": net,
                "payer": payer,
                "to": a["witness"]["to"],
                "value": str(amount),
                "max": a["permitted"]["amount"],
                "nonce": a["nonce"],
                "transaction": tx,
            }
        )
    out = SettleResponse(success=True, transaction=tx, network=net, payer=payer, amount=str(amount))
    return out.model_dump(by_alias=True, exclude_none=True)
