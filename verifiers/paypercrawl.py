"""Cloudflare pay-per-crawl headers (compatibility with existing crawlers).

Wire format, per Cloudflare's AI Crawl Control docs (crawl-pages and
error-codes pages): a price is ``<CURRENCY> <decimal>``, e.g. ``USD 0.01``.

* 402 response: ``crawler-price: USD 0.01``
* paid retry: ``crawler-exact-price`` (must equal the quoted price) **or**
  ``crawler-max-price`` (accepted when price <= max); both → conflict
* 200 response: ``crawler-charged: USD 0.01``
* errors: ``crawler-error: <Code>`` with the status in :data:`ERRORS`

Parsing is pure and strict (one ASCII space, upper-case ISO currency,
plain decimal, no sign or exponent). Payment itself is debited from the
crawler's prepaid account (gateway.payments.ledger); the price header must be
covered by the crawler's Web Bot Auth signature, which the Web Bot Auth
verifier checks, not this module.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from popgate.verifiers.errors import VerificationError

CRAWLER_PRICE = "crawler-price"
CRAWLER_EXACT_PRICE = "crawler-exact-price"
CRAWLER_MAX_PRICE = "crawler-max-price"
CRAWLER_CHARGED = "crawler-charged"
CRAWLER_ERROR = "crawler-error"

# crawler-error code → HTTP status (Cloudflare error-codes reference)
ERRORS: dict[str, int] = {
    "CrawlerForbidden": 403,
    "StrongAuthRequired": 400,
    "InvalidSignature": 400,
    "InvalidCrawlerPriceValue": 400,
    "MissingCrawlerPrice": 402,
    "PaymentFailed": 403,
    "InvalidCrawlerExactPrice": 402,
    "InvalidCrawlerMaxPrice": 402,
    "ConflictingPriceHeaders": 400,
    "InvalidContentPrice": 502,
}
_PRICE = re.compile(r"([A-Z]{3}) ((?:0|[1-9][0-9]{0,11})(?:\.[0-9]{1,12})?)")
MAX_LEN = 64


class CrawlerPriceError(VerificationError):
    """A pay-per-crawl failure; ``code`` is the ``crawler-error`` value."""

    def __init__(self, code: str, detail: str = "") -> None:
        self.code = code
        self.status = ERRORS[code]
        super().__init__(re.sub(r"(?<!^)(?=[A-Z])", "_", code).lower(), detail)

    def headers(self) -> dict[str, str]:
        return {CRAWLER_ERROR: self.code}


@dataclass(frozen=True, slots=True)
class Price:
    currency: str
    amount: Decimal

    def __str__(self) -> str:
        return format_price(self.amount, self.currency)


def parse_price(value: str) -> Price:
    """Parse ``USD 0.01``; raises CrawlerPriceError(InvalidCrawlerPriceValue)."""
    if len(value) > MAX_LEN:
        raise CrawlerPriceError("InvalidCrawlerPriceValue", "too long")
    m = _PRICE.fullmatch(value.strip(" \t"))
    if m is None:
        raise CrawlerPriceError("InvalidCrawlerPriceValue", f"bad price {value[:MAX_LEN]!r}")
    return Price(m.group(1), Decimal(m.group(2)))


def format_price(amount: Decimal, currency: str = "USD") -> str:
    """``Decimal("0.01")`` → ``USD 0.01`` (at least two decimals, no exponent)."""
    if amount < 0 or not amount.is_finite():
        raise ValueError("price must be finite and >= 0")
    q = amount.normalize()
    exp = q.as_tuple().exponent
    if not isinstance(exp, int):  # "n", "N", "F": not finite
        raise ValueError("price must be finite and >= 0")
    text = f"{q:.{max(2, -exp)}f}"
    return f"{currency} {text}"


def price_headers(price: Decimal, currency: str = "USD") -> dict[str, str]:
    """Headers for the 402 answer."""
    return {CRAWLER_PRICE: format_price(price, currency)}


def charged_headers(price: Decimal, currency: str = "USD") -> dict[str, str]:
    """Headers for the successful (billed) answer."""
    return {CRAWLER_CHARGED: format_price(price, currency)}


def accept_offer(headers: Mapping[str, str], price: Decimal, currency: str = "USD") -> Price:
    """Decide whether the crawler agreed to pay ``price``; return the charge.

    ``headers`` must be case-insensitive. Raises CrawlerPriceError with
    ``ConflictingPriceHeaders``, ``MissingCrawlerPrice``,
    ``InvalidCrawlerPriceValue``, ``InvalidCrawlerExactPrice`` or
    ``InvalidCrawlerMaxPrice``.
    """
    exact, cap = headers.get(CRAWLER_EXACT_PRICE), headers.get(CRAWLER_MAX_PRICE)
    if exact is not None and cap is not None:
        raise CrawlerPriceError("ConflictingPriceHeaders")
    text = exact if exact is not None else cap
    if text is None:
        raise CrawlerPriceError("MissingCrawlerPrice")
    offered = parse_price(text)
    if offered.currency != currency:
        raise CrawlerPriceError("InvalidCrawlerPriceValue", f"currency {offered.currency}")
    if exact is not None and offered.amount != price:
        raise CrawlerPriceError("InvalidCrawlerExactPrice", f"{offered.amount} != {price}")
    if cap is not None and offered.amount < price:
        raise CrawlerPriceError("InvalidCrawlerMaxPrice", f"{offered.amount} < {price}")
    return Price(currency, price)
