"""``popgate verify x402-batch`` as a process: JSON Lines in, verdicts out, one store per run."""

from __future__ import annotations

import time
from typing import Any

from tests.support.batch import Payer, header, offer
from tests.support.verify_cli import run_verify

P = "invalid_batch_settlement_evm_"


def run_cli(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return run_verify("x402-batch", cases)


def test_cli_sequence() -> None:
    req, payer, other = offer(1000), Payer(), Payer(0x12)
    r = req.to_json()
    now = int(time.time())
    chain = {
        "balance": "5000",
        "totalClaimed": "0",
        "withdrawRequestedAt": 0,
        "refundNonce": "0",
        "pendingWithdrawalAmount": "0",
        "payerTokenBalance": "100000",
    }

    def case(payload: dict[str, Any], state: Any = None, onchain: Any = chain) -> dict[str, Any]:
        return {
            "requirements": r,
            "header_value": header(req, payload),
            "channel_state": state,
            "onchain": onchain,
            "now": now,
        }

    forged = payer.voucher(req, 3000)
    forged["voucher"]["signature"] = other.voucher(req, 3000)["voucher"]["signature"]
    closing = dict(chain, withdrawRequestedAt=now - 850)
    state = {
        "channelConfig": payer.voucher(req, 1)["channelConfig"],
        "chargedCumulativeAmount": "2000",
        "balance": "5000",
        "totalClaimed": "0",
        "withdrawRequestedAt": 0,
        "refundNonce": 0,
    }
    got = run_cli(
        [
            case(payer.sdk_payload(req), onchain=None),  # deposit 5000 + voucher 1000
            case(payer.voucher(req, 2000)),  # continues from the run's store
            case(payer.voucher(req, 2000)),  # replay
            case(forged),  # other signer
            case(payer.voucher(req, 3000, channel=other.channel_id(req))),
            case(payer.voucher(req, 3000), onchain=dict(chain, balance="2999")),
            case(payer.voucher(req, 3000), onchain=dict(chain, totalClaimed="3000")),
            case(payer.voucher(req, 3000), onchain=closing),
            case(payer.voucher(req, 3000), state=state),  # explicit server record
            case(payer.voucher(req, 3000), state={**state, "chargedCumulativeAmount": "2500"}),
        ]
    )
    assert [(g["valid"], g["reason"], g["charged_after"]) for g in got] == [
        (True, "ok", "1000"),
        (True, "ok", "2000"),
        (False, P + "cumulative_amount_mismatch", "2000"),
        (False, P + "voucher_signature", "2000"),
        (False, P + "channel_id_mismatch", "0"),  # the claimed (other) channel: unknown here
        (False, P + "cumulative_exceeds_balance", "2000"),
        (False, P + "cumulative_below_claimed", "2000"),
        (False, P + "withdraw_window_expired", "2000"),
        (True, "ok", "3000"),
        (False, P + "cumulative_amount_mismatch", "2500"),
    ]
    assert got[0]["kind"] == "deposit" and got[0]["payer"] == payer.account.address
