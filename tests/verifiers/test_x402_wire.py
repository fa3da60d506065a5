"""x402 header encoding: our output decodes with the official SDK, our parser
takes the SDK's output, and malformed input is always ``Malformed``."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict
from x402.http.utils import (
    decode_payment_required_header,
    decode_payment_response_header,
    encode_payment_response_header,
)
from x402.schemas import SettleResponse

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.x402 import (
    USDC,
    Requirements,
    SettleResult,
    decode_header,
    encode_header,
    encode_payment_response,
    exact_requirements,
    extract,
    parse_payment_signature,
    parse_x_payment,
    payment_required,
    select_offer,
    usd_to_atomic,
)
from tests.fixtures.x402.cases import CASES

PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"


@pytest.mark.parametrize(
    "price,atomic",
    [("0.01", 10000), ("$0.01", 10000), ("1", 1000000), ("0.000001", 1), ("0", 0), (Decimal("2.5"), 2500000)],
)
def test_usd_to_atomic(price: str, atomic: int) -> None:
    """Decimal USD prices become USDC atomic units exactly."""
    assert usd_to_atomic(price) == atomic


@pytest.mark.parametrize("price", ["0.0000001", "-1", "abc", "NaN", "Infinity", ""])
def test_usd_to_atomic_refuses(price: str) -> None:
    """Sub-unit, negative and non-numeric prices are refused, never rounded."""
    with pytest.raises(ValueError):
        usd_to_atomic(price)


def test_requirements_per_network() -> None:
    """Base Sepolia uses domain name USDC, Base uses USD Coin; both version 2."""
    s = exact_requirements("0.01", "eip155:84532", PAY_TO)
    b = exact_requirements("0.01", "eip155:8453", PAY_TO)
    assert (s.asset, s.extra["name"], s.amount) == (USDC["eip155:84532"].address, "USDC", "10000")
    assert (b.asset, b.extra["name"], b.extra["version"]) == (USDC["eip155:8453"].address, "USD Coin", "2")
    with pytest.raises(ValueError):
        exact_requirements("0.01", "eip155:999", PAY_TO)


def test_payment_required_decodes_with_sdk() -> None:
    """The PAYMENT-REQUIRED header we build is read by the SDK's own decoder."""
    reqs = [exact_requirements("0.01", "eip155:84532", PAY_TO, max_timeout_seconds=120)]
    header = encode_header(payment_required(reqs, url="https://gw.example/api", error="Payment required"))
    pr = decode_payment_required_header(header)
    assert pr.x402_version == 2 and pr.error == "Payment required"
    assert pr.resource is not None and pr.resource.url == "https://gw.example/api"
    a = pr.accepts[0]
    assert (a.scheme, a.network, a.amount, a.pay_to, a.max_timeout_seconds, a.extra) == (
        "exact",
        "eip155:84532",
        "10000",
        PAY_TO,
        120,
        {"name": "USDC", "version": "2"},
    )
    assert "extensions" not in json.loads(base64.b64decode(header))  # exclude_none, as the SDK


def test_payment_response_both_ways() -> None:
    """PAYMENT-RESPONSE: ours decodes with the SDK, the SDK's parses with ours."""
    r = SettleResult(True, "0x" + "ab" * 32, "eip155:84532", payer="0x" + "11" * 20)
    sdk = decode_payment_response_header(encode_payment_response(r))
    assert (sdk.success, sdk.transaction, sdk.network, sdk.payer) == (True, r.transaction, r.network, r.payer)
    theirs = encode_payment_response_header(
        SettleResponse(
            success=False, error_reason="settlement_pending", transaction="0x01", network="eip155:8453"
        )
    )
    back = SettleResult.from_json(decode_header(theirs))
    assert (back.success, back.error_reason, back.transaction) == (False, "settlement_pending", "0x01")


def test_parse_sdk_payload() -> None:
    """A PAYMENT-SIGNATURE made by the SDK parses, with accepted and raw intact."""
    c = CASES["p01_sepolia"]
    p = parse_payment_signature(c["header_value"])
    assert p.version == 2 and p.scheme == "exact" and p.network == "eip155:84532"
    assert p.accepted == Requirements.from_json(c["requirements"][0])
    assert p.raw["payload"]["authorization"]["value"] == "10000"


def test_v1_parses_only_under_x_payment() -> None:
    """v1 JSON parses as X-PAYMENT, and is malformed under PAYMENT-SIGNATURE."""
    v1 = CASES["p04_v1_x_payment"]["header_value"]
    assert parse_x_payment(v1).network == "eip155:84532"
    with pytest.raises(Malformed):
        parse_payment_signature(v1)
    with pytest.raises(Malformed):
        parse_x_payment(CASES["p01_sepolia"]["header_value"])


def test_extract_headers() -> None:
    """extract: none → None; v1 ignored unless enabled; both at once → Malformed."""
    v2, v1 = CASES["p01_sepolia"]["header_value"], CASES["p04_v1_x_payment"]["header_value"]
    assert extract(CIMultiDict()) is None
    assert extract(CIMultiDict({"X-Payment": v1})) is None
    assert extract(CIMultiDict({"x-payment": v1}), accept_v1=True).version == 1  # type: ignore[union-attr]
    assert extract(CIMultiDict({"payment-signature": v2})).version == 2  # type: ignore[union-attr]
    with pytest.raises(Malformed):
        extract(CIMultiDict({"PAYMENT-SIGNATURE": v2, "X-PAYMENT": v1}), accept_v1=True)


@pytest.mark.parametrize("obj", ['{"a":1,"a":2}', '{"a":NaN}', "[1]", '"x"', '{"a":Infinity}'])
def test_decode_header_refuses(obj: str) -> None:
    """Duplicate keys, NaN/Infinity and non-object roots are malformed."""
    with pytest.raises(Malformed):
        decode_header(base64.b64encode(obj.encode()).decode())


def test_decode_header_size_limit() -> None:
    """Headers over the limit are refused before decoding."""
    with pytest.raises(Malformed):
        decode_header("A" * 20000)


def test_select_offer_reasons() -> None:
    """Offer selection distinguishes scheme, network and other mismatches."""
    p = parse_payment_signature(CASES["p01_sepolia"]["header_value"])
    sep = Requirements.from_json(CASES["p01_sepolia"]["requirements"][0])
    assert select_offer(p, [sep]) is sep
    base = exact_requirements("0.01", "eip155:8453", sep.pay_to)
    upto = Requirements("upto", sep.network, sep.asset, sep.amount, sep.pay_to, 300, {})
    cheaper = Requirements("exact", sep.network, sep.asset, "1", sep.pay_to, 300, sep.extra)
    for offers, reason in (
        ([upto], "unsupported_scheme"),
        ([base], "wrong_network"),
        ([cheaper], "requirements_mismatch"),
    ):
        with pytest.raises(VerificationError) as e:
            select_offer(p, offers)
        assert e.value.reason == reason


# --- property tests: every parser either returns or raises VerificationError ---

json_leaf = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_any = st.recursive(
    json_leaf,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
    max_leaves=20,
)


@given(st.text(max_size=300))
def test_fuzz_text(value: str) -> None:
    """Arbitrary header text never raises anything but VerificationError."""
    for parse in (parse_payment_signature, parse_x_payment):
        try:
            parse(value)
        except VerificationError:
            pass


@given(json_any)
def test_fuzz_json(obj: object) -> None:
    """Arbitrary base64 JSON never raises anything but VerificationError."""
    value = base64.b64encode(json.dumps(obj).encode()).decode()
    for parse in (parse_payment_signature, parse_x_payment):
        try:
            parse(value)
        except VerificationError:
            pass


@given(st.dictionaries(st.text(max_size=10), json_any, max_size=6))
def test_header_round_trip(obj: dict) -> None:
    """decode_header(encode_header(x)) == x for JSON objects."""
    assert decode_header(encode_header(obj)) == json.loads(json.dumps(obj))


def _mutations(raw: dict) -> st.SearchStrategy[dict]:
    paths = [("accepted", k) for k in raw["accepted"]] + [
        ("payload", "authorization", k) for k in raw["payload"]["authorization"]
    ]
    return st.tuples(st.sampled_from(paths), json_leaf).map(lambda pv: _set(raw, *pv))


def _set(raw: dict, path: tuple[str, ...], value: object) -> dict:
    out = json.loads(json.dumps(raw))
    node = out
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return out


@given(_mutations(json.loads(base64.b64decode(CASES["p01_sepolia"]["header_value"]))))
def test_fuzz_field_types(mutated: dict) -> None:
    """Any field of a real payload replaced by any JSON leaf: parse or Malformed."""
    try:
        parse_payment_signature(encode_header(mutated))
    except VerificationError:
        pass
