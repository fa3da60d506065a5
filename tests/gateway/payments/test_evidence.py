"""Payments as evidence: what the Extract stage finds in a request, in the order the rails
take it, and that arbitrary header values never make extraction raise."""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from popgate.gateway.payments.evidence import Payment, PaymentScheme

CASES = json.loads((Path(__file__).resolve().parents[2] / "fixtures" / "x402" / "cases.json").read_text())
SDK_PAYMENT = next(c for c in CASES["cases"] if c["name"] == "p01_sepolia")["header_value"]
API_KEY = "pgk_0123456789abcdef_" + "s" * 43
ALL = PaymentScheme(x402=True, accept_v1=True, credits=True, crawlers=True)


def extract(scheme: PaymentScheme, headers: dict[str, str]) -> Payment | None:
    return scheme.extract(make_mocked_request("GET", "/api/x", headers=CIMultiDict(headers)))


def test_x402_payment_from_the_official_sdk_is_extracted() -> None:
    """A PAYMENT-SIGNATURE made by the x402 SDK is decoded in Extract (no check yet)."""
    got = extract(ALL, {"PAYMENT-SIGNATURE": SDK_PAYMENT})
    assert got is not None and got.rail == "x402" and got.x402 is not None and got.malformed is None


def test_undecodable_payment_header_is_kept_as_malformed_not_raised() -> None:
    """An undecodable header is evidence marked malformed: the charge, if any, answers 400;
    a request on a free route is not refused for it."""
    got = extract(ALL, {"PAYMENT-SIGNATURE": "not base64 json"})
    assert got is not None and got.rail == "x402" and got.x402 is None and got.malformed
    both = extract(ALL, {"PAYMENT-SIGNATURE": SDK_PAYMENT, "X-PAYMENT": SDK_PAYMENT})
    assert both is not None and both.malformed  # both headers at once


def test_rails_are_taken_in_order_and_only_when_configured() -> None:
    """x402 first, then an API key, then a crawler's price; a rail that is off sees nothing."""
    h = {"PAYMENT-SIGNATURE": SDK_PAYMENT, "Authorization": f"Bearer {API_KEY}", "crawler-max-price": "0.01"}
    assert extract(ALL, h).rail == "x402"  # type: ignore[union-attr]
    no_x402 = PaymentScheme(x402=False, accept_v1=False, credits=True, crawlers=True)
    got = extract(no_x402, h)
    assert got is not None and (got.rail, got.api_key) == ("credits", API_KEY)
    assert extract(no_x402, {"crawler-max-price": "0.01"}) == Payment("crawler")
    no_crawlers = PaymentScheme(x402=True, accept_v1=False, credits=True, crawlers=False)
    assert extract(no_crawlers, {"crawler-exact-price": "0.01"}) is None
    assert extract(no_crawlers, {"X-PAYMENT": SDK_PAYMENT}) is None  # v1 not accepted
    assert extract(ALL, {"Authorization": "PoP v1.k.p.m"}) is None  # a session is not a payment


@given(
    st.dictionaries(
        st.sampled_from(["PAYMENT-SIGNATURE", "X-PAYMENT", "Authorization", "crawler-max-price"]),
        st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=300),
    )
)
def test_extraction_never_raises(headers: dict[str, str]) -> None:
    """Whatever a client puts in these headers, extraction returns a Payment or None."""
    got = extract(ALL, headers)
    assert got is None or got.rail in ("x402", "credits", "crawler")
