"""``popgate verify x402-upto`` as a process: JSON Lines in, verdicts out, one store per run."""

from __future__ import annotations

import time
from typing import Any

from eth_account import Account

from tests.support.upto import MAX, requirements, signed_payment
from tests.support.verify_cli import run_verify

KEY = "0x" + "7c" * 32


def test_cli_sequence() -> None:
    now = int(time.time())
    good = signed_payment(KEY, nonce=42)
    cases: list[dict[str, Any]] = [
        {"header_value": good, "requirements": [requirements()], "now": now},
        {"header_value": good, "requirements": [requirements()], "now": now},  # replayed in this run
        {"header_value": signed_payment(KEY, amount=MAX - 1), "requirements": [requirements()], "now": now},
        {
            "header_value": signed_payment(KEY, deadline=now + 60),
            "requirements": [requirements()],
            "now": now + 120,
        },
    ]
    out = run_verify("x402-upto", cases)
    assert out[0] == {
        "valid": True,
        "reason": "ok",
        "payer": Account.from_key(KEY).address,
        "network": "eip155:84532",
        "max_amount": str(MAX),
        "nonce": "42",
        "signature_checked": True,
    }
    assert [o["reason"] for o in out[1:]] == ["nonce_reused", "amount_mismatch", "expired"]
