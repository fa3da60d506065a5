"""batch-settlement vouchers: our local check vs payloads the official SDK signs."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from x402.mechanisms.evm.batch_settlement.types import ChannelConfig as SdkConfig
from x402.mechanisms.evm.batch_settlement.utils import compute_channel_id as sdk_channel_id

from popgate.verifiers.errors import VerificationError
from popgate.verifiers.x402 import parse_payment_signature
from popgate.verifiers.x402_batch import ChainView, verify_batch
from popgate.verifiers.x402_channel import channel_id, parse_config, parse_payload
from tests.support.batch import Payer, header, offer

NOW = 1_800_000_000
FULL = ChainView(balance=10_000)


def run(
    req: Any, payload: dict[str, Any], charged: int | None = 0, view: ChainView | None = FULL, **kw: Any
) -> Any:
    return verify_batch(parse_payment_signature(header(req, payload)), [req], charged, view, NOW, **kw)


def reason(*a: Any, **kw: Any) -> str:
    with pytest.raises(VerificationError) as exc:
        run(*a, **kw)
    return exc.value.reason


def test_sdk_deposit_then_vouchers_are_accepted() -> None:
    req, payer = offer(1000), Payer()
    dep = payer.sdk_payload(req)
    d = run(req, dep, charged=None, view=None)
    assert (d.kind, d.charged_before, d.charged_after, d.needs_facilitator) == ("deposit", 0, 1000, False)
    assert d.channel_id == payer.channel_id(req)
    for n in range(2, 6):
        d = run(req, payer.voucher(req, n * 1000), charged=(n - 1) * 1000)
        assert d.charged_after == n * 1000 and d.kind == "voucher"


@given(st.binary(min_size=20, max_size=20), st.binary(min_size=32, max_size=32), st.integers(900, 2_592_000))
@settings(max_examples=40, deadline=None)
def test_channel_id_matches_sdk(addr: bytes, salt: bytes, delay: int) -> None:
    a = "0x" + addr.hex()
    raw = {
        "payer": a,
        "payerAuthorizer": a,
        "receiver": "0x" + "22" * 20,
        "receiverAuthorizer": a,
        "token": "0x" + "44" * 20,
        "withdrawDelay": delay,
        "salt": "0x" + salt.hex(),
    }
    ours = channel_id(parse_config(raw, "e"), 8453)
    assert "0x" + ours.hex() == sdk_channel_id(SdkConfig.from_dict(raw), 8453).lower()


def test_negatives() -> None:
    req, payer, other = offer(1000), Payer(), Payer(0x12)
    good = payer.voucher(req, 3000)
    forged = dict(
        good, voucher=dict(good["voucher"], signature=other.voucher(req, 3000)["voucher"]["signature"])
    )
    assert reason(req, forged, charged=2000) == "invalid_batch_settlement_evm_voucher_signature"
    wrong_channel = payer.voucher(req, 3000, channel=other.channel_id(req))
    assert reason(req, wrong_channel, charged=2000) == "invalid_batch_settlement_evm_channel_id_mismatch"
    assert reason(req, good, charged=2500) == "invalid_batch_settlement_evm_cumulative_amount_mismatch"
    assert reason(req, good, charged=3000) == "invalid_batch_settlement_evm_cumulative_amount_mismatch"
    assert reason(req, good, charged=2000, view=ChainView(balance=2999)) == (
        "invalid_batch_settlement_evm_cumulative_exceeds_balance"
    )
    assert reason(req, good, charged=2000, view=ChainView(balance=9000, total_claimed=3000)) == (
        "invalid_batch_settlement_evm_cumulative_below_claimed"
    )
    closing = ChainView(balance=9000, withdraw_requested_at=NOW - 900 + 60)
    assert (
        reason(req, good, charged=2000, view=closing)
        == "invalid_batch_settlement_evm_withdraw_window_expired"
    )
    assert run(req, good, charged=2000, view=ChainView(balance=9000, withdraw_requested_at=NOW - 100))
    assert (
        reason(req, good, charged=2000, view=None)
        == "invalid_batch_settlement_evm_verification_state_unavailable"
    )


@pytest.mark.parametrize("hexdigits", ["", "a", "abc", "ab" * 65 + "c", "ab" * 4096 + "ab", "zz" * 65])
def test_a_badly_formed_signature_is_the_payload_error(hexdigits: str) -> None:
    """Odd, empty, over-long or non-hex signatures: the payload's own error, not a crash."""
    payload = Payer().voucher(offer(1000), 3000)
    payload["voucher"]["signature"] = "0x" + hexdigits
    with pytest.raises(VerificationError) as err:
        parse_payload(payload)
    assert err.value.reason == "invalid_batch_settlement_evm_voucher_payload"


def test_wrong_domain_chain_and_offer() -> None:
    req, payer = offer(1000), Payer()
    other_chain = offer(1000, network="eip155:8453")
    v = payer.voucher(other_chain, 1000)  # signed on Base: channel id bound to 8453
    assert reason(req, v, charged=0) == "invalid_batch_settlement_evm_channel_id_mismatch"
    # same channel id, voucher signed under another chain's domain
    mine = payer.voucher(req, 1000)
    alien = payer.voucher(other_chain, 1000, channel=mine["voucher"]["channelId"])
    assert reason(req, dict(mine, voucher=alien["voucher"]), charged=0) == (
        "invalid_batch_settlement_evm_voucher_signature"
    )
    slow = offer(1000, delay=1800)
    assert (
        reason(slow, payer.voucher(req, 1000), charged=0)
        == "invalid_batch_settlement_evm_withdraw_delay_mismatch"
    )


def test_min_deposit_and_refund() -> None:
    req, payer = offer(1000, min_deposit=10_000), Payer()
    dep = payer.sdk_payload(req)  # the SDK deposits minDeposit
    assert run(req, dep, charged=None, view=None).charged_after == 1000
    small = dict(dep, deposit=dict(dep["deposit"], amount="999"))
    assert (
        reason(req, small, charged=None, view=None)
        == "invalid_batch_settlement_evm_deposit_below_min_deposit"
    )
    refund = payer.voucher(req, 4000, kind="refund")
    d = run(req, refund, charged=4000)
    assert (d.kind, d.charged_after) == ("refund", 4000)
    too_much = dict(refund, amount="6001")
    assert reason(req, too_much, charged=4000) == "invalid_batch_settlement_evm_refund_amount_invalid"


@given(
    st.dictionaries(
        st.sampled_from(["type", "channelConfig", "voucher", "deposit", "amount"]),
        st.one_of(
            st.none(),
            st.integers(),
            st.text(max_size=70),
            st.dictionaries(st.text(max_size=20), st.text(max_size=70), max_size=8),
        ),
    )
)
@settings(max_examples=200, deadline=None)
def test_parser_never_crashes(payload: dict[str, Any]) -> None:
    try:
        parse_payload(payload)
    except VerificationError as exc:
        assert exc.reason.startswith("invalid_batch_settlement_evm_")


def test_mutated_headers_are_refused_cleanly() -> None:
    req, payer = offer(1000), Payer()
    text = json.dumps({"x402Version": 2, "payload": payer.voucher(req, 1000), "accepted": req.to_json()})
    for i in range(0, len(text), 7):
        bad = text[:i] + text[i + 1 :]
        try:
            run_header = base64.b64encode(bad.encode()).decode()
            verify_batch(parse_payment_signature(run_header), [req], 0, FULL, NOW)
        except VerificationError:
            pass
