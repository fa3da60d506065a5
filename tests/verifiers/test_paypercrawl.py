"""Cloudflare pay-per-crawl header parsing and price negotiation."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from popgate.verifiers.errors import VerificationError
from popgate.verifiers.paypercrawl import (
    CRAWLER_CHARGED,
    CRAWLER_ERROR,
    CRAWLER_PRICE,
    CrawlerPriceError,
    Price,
    accept_offer,
    charged_headers,
    format_price,
    parse_price,
    price_headers,
)

P = Decimal("0.01")


@pytest.mark.parametrize(
    "text,cur,amount",
    [
        ("USD 0.01", "USD", "0.01"),
        ("USD 1", "USD", "1"),
        ("EUR 0.5", "EUR", "0.5"),
        ("USD 12.000001", "USD", "12.000001"),
    ],
)
def test_parse(text: str, cur: str, amount: str) -> None:
    """Documented format ``USD 0.01`` parses to currency and exact Decimal."""
    assert parse_price(text) == Price(cur, Decimal(amount))


@pytest.mark.parametrize(
    "text",
    [
        "0.01",
        "usd 0.01",
        "USD  0.01",
        "USD -0.01",
        "USD 1e-2",
        "USD .01",
        "USD 0.01 extra",
        "USD",
        "USD 01",
        "$0.01",
        "",
    ],
)
def test_parse_refuses(text: str) -> None:
    """Anything else is InvalidCrawlerPriceValue (HTTP 400)."""
    with pytest.raises(CrawlerPriceError) as e:
        parse_price(text)
    assert (e.value.code, e.value.status, e.value.reason) == (
        "InvalidCrawlerPriceValue",
        400,
        "invalid_crawler_price_value",
    )


def test_format() -> None:
    """Prices print with at least two decimals and never in exponent form."""
    assert format_price(Decimal("0.01")) == "USD 0.01"
    assert format_price(Decimal("1")) == "USD 1.00"
    assert format_price(Decimal("0.000001")) == "USD 0.000001"
    assert format_price(Decimal("1E+2")) == "USD 100.00"
    assert price_headers(P) == {CRAWLER_PRICE: "USD 0.01"}
    assert charged_headers(P) == {CRAWLER_CHARGED: "USD 0.01"}


@given(st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False))
def test_format_parse_round_trip(d: Decimal) -> None:
    """parse(format(x)) == x for any 6-decimal price."""
    assert parse_price(format_price(d)).amount == d


@given(st.text(max_size=80))
def test_parse_fuzz(text: str) -> None:
    """Arbitrary header text: a Price or CrawlerPriceError, nothing else."""
    try:
        parse_price(text)
    except CrawlerPriceError:
        pass


@pytest.mark.parametrize(
    "headers,code",
    [
        ({}, "MissingCrawlerPrice"),
        ({"crawler-exact-price": "USD 0.01", "crawler-max-price": "USD 0.05"}, "ConflictingPriceHeaders"),
        ({"crawler-exact-price": "USD 0.02"}, "InvalidCrawlerExactPrice"),
        ({"crawler-max-price": "USD 0.009"}, "InvalidCrawlerMaxPrice"),
        ({"crawler-max-price": "EUR 1"}, "InvalidCrawlerPriceValue"),
        ({"crawler-exact-price": "0.01"}, "InvalidCrawlerPriceValue"),
    ],
)
def test_offer_errors(headers: dict[str, str], code: str) -> None:
    """Each Cloudflare error code with its status and crawler-error header."""
    with pytest.raises(CrawlerPriceError) as e:
        accept_offer(CIMultiDict(headers), P)
    assert e.value.code == code and e.value.headers() == {CRAWLER_ERROR: code}
    assert isinstance(e.value, VerificationError)
    assert (
        e.value.status
        == {
            "MissingCrawlerPrice": 402,
            "ConflictingPriceHeaders": 400,
            "InvalidCrawlerExactPrice": 402,
            "InvalidCrawlerMaxPrice": 402,
            "InvalidCrawlerPriceValue": 400,
        }[code]
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"Crawler-Exact-Price": "USD 0.01"},
        {"crawler-max-price": "USD 0.05"},
        {"crawler-max-price": "USD 0.010"},
    ],
)
def test_offer_accepted_charges_our_price(headers: dict[str, str]) -> None:
    """An acceptable offer is charged our price, never the crawler's max."""
    assert accept_offer(CIMultiDict(headers), P) == Price("USD", P)
