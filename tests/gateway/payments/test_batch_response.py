"""PAYMENT-RESPONSE of a batch payment: the header written straight as JSON
text is the very encoding of the structured answer."""

from __future__ import annotations

import base64
import json

import pytest

from popgate.gateway.payments.batch import payment_response, payment_response_header
from popgate.gateway.payments.channels import Reservation
from popgate.gateway.payments.vouchers import Begun
from popgate.verifiers.x402 import encode_payment_response, parse_payment_signature
from popgate.verifiers.x402_batch import ChainView, verify_batch
from popgate.verifiers.x402_channel import parse_payload
from tests.support.batch import Payer, header, offer


@pytest.mark.parametrize("kind", ["deposit", "voucher", "refund"])
def test_the_header_is_the_encoded_settle_result(kind: str) -> None:
    req, payer = offer(1000), Payer()
    payload = payer.sdk_payload(req) if kind == "deposit" else payer.voucher(req, 5000, kind=kind)
    payment = parse_payment_signature(header(req, payload))
    charged = None if kind == "deposit" else (4000 if kind == "voucher" else 5000)
    view = ChainView(10**9, 0, 0, 3)
    decision = verify_batch(payment, [req], charged, view, 0.0, parsed=parse_payload(payment.payload))
    tx = "0x" + "ab" * 32 if kind != "voucher" else ""
    begun = Begun(
        decision, Reservation(decision.channel_id, "", {}), ChainView(7 * 10**6, 2000, 1700, 3), False, tx
    )
    assert payment_response_header(begun) == encode_payment_response(payment_response(begun))
    decoded = json.loads(base64.b64decode(payment_response_header(begun)))
    assert decoded["extra"]["channelState"]["chargedCumulativeAmount"] == str(decision.charged_after)
    assert ("chargedAmount" in decoded["extra"]) is (kind != "refund")
