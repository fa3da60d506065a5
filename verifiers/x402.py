"""x402 wire format (v2, with v1 ``X-PAYMENT`` accepted when configured).

Headers carry standard base64 (RFC 4648, padded) of UTF-8 JSON, the same
encoding as the official SDK (``x402.http.utils``): ``PAYMENT-REQUIRED``
(server → client, on 402), ``PAYMENT-SIGNATURE`` (client → server) and
``PAYMENT-RESPONSE`` (server → client). We emit compact JSON with the SDK's
camelCase names and ``exclude_none`` behaviour; we never rely on key order
or whitespace when reading.

Parsing is pure (no I/O) and strict: any problem raises
:class:`verifiers.errors.Malformed` (reason ``malformed``, the specific
cause in ``detail``) so the gateway can answer 400 instead of a silent 402.
Duplicate JSON keys, NaN/Infinity, non-object roots and oversized headers
are all refused.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.evm import parse_address

PAYMENT_REQUIRED = "PAYMENT-REQUIRED"
PAYMENT_SIGNATURE = "PAYMENT-SIGNATURE"
PAYMENT_RESPONSE = "PAYMENT-RESPONSE"
X_PAYMENT = "X-PAYMENT"
X_PAYMENT_RESPONSE = "X-PAYMENT-RESPONSE"
MAX_HEADER_LEN = 16 * 1024  # Bazaar extensions can exceed 8 KiB (x402 #2993)


@dataclass(frozen=True, slots=True)
class Asset:
    """An EIP-3009 token on one network, with its EIP-712 domain."""

    address: str
    name: str
    version: str
    decimals: int = 6


# USDC per CAIP-2 network (from the SDK's mechanisms/evm/default_assets.py).
# The testnet domain name differs from mainnet: a wrong name only shows up as
# a bad signature.
USDC: dict[str, Asset] = {
    "eip155:8453": Asset("0x833589fCD6eDb6E08f4c7C32D4f71b54bdA02913", "USD Coin", "2"),
    "eip155:84532": Asset("0x036CbD53842c5426634e7929541eC2318f3dCF7e", "USDC", "2"),
    "eip155:1": Asset("0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48", "USD Coin", "2"),
    "eip155:43114": Asset("0xB97EF9Ef8734C71904D8002F8b6Bc66Dd9c48a6E", "USD Coin", "2"),
}
# v1 used plain network names.
V1_NETWORKS = {
    "base": "eip155:8453",
    "base-sepolia": "eip155:84532",
    "ethereum": "eip155:1",
    "avalanche": "eip155:43114",
}


def usd_to_atomic(price: str | Decimal, decimals: int = 6) -> int:
    """Convert a decimal USD price (``"0.01"``, ``"$0.01"``) to atomic units.

    Raises ValueError for negatives, non-numbers, and prices finer than one
    atomic unit (never rounds: a silent rounding would change the price).
    """
    text = str(price).strip().removeprefix("$")
    try:
        value = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal price: {price!r}") from exc
    if not value.is_finite() or value < 0:
        raise ValueError(f"price must be a finite non-negative number: {price!r}")
    scaled = value.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"price {price!r} is finer than 10^-{decimals}")
    return int(scaled)


@dataclass(frozen=True, slots=True)
class Requirements:
    """One ``PaymentRequirements`` entry of ``accepts[]`` (v2)."""

    scheme: str
    network: str
    asset: str
    amount: str
    pay_to: str
    max_timeout_seconds: int
    extra: Mapping[str, Any] = field(default_factory=dict, hash=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "network": self.network,
            "asset": self.asset,
            "amount": self.amount,
            "payTo": self.pay_to,
            "maxTimeoutSeconds": self.max_timeout_seconds,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_json(cls, obj: Any, where: str = "requirements") -> Requirements:
        """Parse a decoded JSON object; raises Malformed."""
        o = _obj(obj, where)
        extra = o.get("extra", {})
        mts = o.get("maxTimeoutSeconds")
        if isinstance(mts, bool) or not isinstance(mts, int) or mts <= 0:
            raise Malformed(detail=f"{where}.maxTimeoutSeconds must be a positive integer")
        return cls(
            _str(o, "scheme", where),
            _str(o, "network", where),
            _str(o, "asset", where),
            _str(o, "amount", where),
            _str(o, "payTo", where),
            mts,
            _obj(extra, f"{where}.extra"),
        )

    def for_facilitator(self, version: int, resource: str = "") -> dict[str, Any]:
        """The ``paymentRequirements`` a facilitator expects for a payload of
        ``version``: v2 as is; v1 with ``maxAmountRequired``, the v1 network
        name and ``resource`` inside (``PaymentRequirementsV1``)."""
        if version != 1:
            return self.to_json()
        name = next((k for k, v in V1_NETWORKS.items() if v == self.network), self.network)
        return {
            "scheme": self.scheme,
            "network": name,
            "maxAmountRequired": self.amount,
            "resource": resource,
            "description": "",
            "mimeType": "",
            "payTo": self.pay_to,
            "maxTimeoutSeconds": self.max_timeout_seconds,
            "asset": self.asset,
            "extra": dict(self.extra),
        }

    def matches(self, accepted: Requirements) -> bool:
        """The SDK's rule: core terms equal, our ``extra`` a subset of theirs."""
        return (
            self.scheme == accepted.scheme
            and self.network == accepted.network
            and self.amount == accepted.amount
            and self.asset == accepted.asset
            and self.pay_to == accepted.pay_to
            and self.max_timeout_seconds == accepted.max_timeout_seconds
            and self.extra.items() <= accepted.extra.items()  # every (key, value) of ours in theirs
        )


def exact_requirements(
    price_usd: str | Decimal,
    network: str,
    pay_to: str,
    *,
    max_timeout_seconds: int = 300,
    asset: Asset | None = None,
) -> Requirements:
    """Build an ``exact`` EIP-3009 requirement for a route price in USD.

    Raises ValueError for an unknown network (without an explicit ``asset``),
    a ``pay_to`` that is not an address, or a price that is not a whole
    number of atomic units.
    """
    if asset is None:
        if network not in USDC:
            raise ValueError(f"no default USDC for {network}; pass asset=")
        asset = USDC[network]
    amount = usd_to_atomic(price_usd, asset.decimals)
    parse_address(pay_to)  # ValueError at configure time, not per request
    return Requirements(
        "exact",
        network,
        asset.address,
        str(amount),
        pay_to,
        max_timeout_seconds,
        {"name": asset.name, "version": asset.version},
    )


def payment_required(
    accepts: list[Requirements],
    *,
    url: str,
    description: str = "",
    mime_type: str = "",
    error: str | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The decoded ``PAYMENT-REQUIRED`` object (``x402Version: 2``)."""
    out: dict[str, Any] = {"x402Version": 2}
    if error is not None:
        out["error"] = error
    out["resource"] = {"url": url, "description": description, "mimeType": mime_type}
    out["accepts"] = [r.to_json() for r in accepts]
    if extensions:
        out["extensions"] = dict(extensions)
    return out


def encode_header(obj: Mapping[str, Any]) -> str:
    """base64(compact UTF-8 JSON), as every x402 header carries."""
    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return base64.b64encode(text.encode()).decode("ascii")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)  # built in C; a duplicate makes it shorter
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise ValueError(f"duplicate key {k!r}")
            seen.add(k)
    return out


# made once (json.loads with hooks builds a decoder per call)
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def decode_header(value: str, max_len: int = MAX_HEADER_LEN) -> dict[str, Any]:
    """Decode a base64 JSON header into a dict; raises Malformed."""
    if len(value) > max_len:
        raise Malformed(detail=f"header longer than {max_len}")
    try:
        raw = base64.b64decode(value.strip().encode("ascii"), validate=True)
        obj = _DECODER.decode(raw.decode("utf-8"))
    except (binascii.Error, UnicodeError) as exc:
        raise Malformed(detail=f"bad base64/utf-8: {exc}") from exc
    except (ValueError, RecursionError) as exc:
        raise Malformed(detail=f"bad JSON: {exc}") from exc
    return _obj(obj, "header")


@dataclass(frozen=True, slots=True)
class PaymentPayload:
    """A decoded ``PAYMENT-SIGNATURE`` (v2) or ``X-PAYMENT`` (v1).

    v1 has no ``accepted``: ``scheme`` and ``network`` (CAIP-2, mapped from
    the v1 name) sit at top level, and the offer is found by matching them.
    ``raw`` is the decoded JSON, forwarded verbatim to a facilitator.
    """

    version: int
    scheme: str
    network: str
    payload: Mapping[str, Any]
    accepted: Requirements | None
    raw: Mapping[str, Any]


def parse_payment_signature(value: str) -> PaymentPayload:
    """Parse a v2 ``PAYMENT-SIGNATURE`` header; raises Malformed.

    A v1 payload sent under the v2 header name is malformed (it has no
    ``accepted`` to match against; we never guess the version).
    """
    obj = decode_header(value)
    if obj.get("x402Version") != 2 or isinstance(obj.get("x402Version"), bool):
        raise Malformed(detail=f"PAYMENT-SIGNATURE with x402Version {obj.get('x402Version')!r}")
    accepted = Requirements.from_json(obj.get("accepted"), "accepted")
    payload = _obj(obj.get("payload"), "payload")
    return PaymentPayload(2, accepted.scheme, accepted.network, payload, accepted, obj)


def parse_x_payment(value: str) -> PaymentPayload:
    """Parse a v1 ``X-PAYMENT`` header; raises Malformed / ``wrong_network``."""
    obj = decode_header(value)
    if obj.get("x402Version") != 1 or isinstance(obj.get("x402Version"), bool):
        raise Malformed(detail=f"X-PAYMENT with x402Version {obj.get('x402Version')!r}")
    scheme, network = _str(obj, "scheme", "v1"), _str(obj, "network", "v1")
    if network not in V1_NETWORKS:
        raise VerificationError("wrong_network", f"unknown v1 network {network!r}")
    payload = _obj(obj.get("payload"), "payload")
    return PaymentPayload(1, scheme, V1_NETWORKS[network], payload, None, obj)


def extract(headers: Mapping[str, str], *, accept_v1: bool = False) -> PaymentPayload | None:
    """Return the payment a request carries, None when it carries none.

    ``headers`` must be case-insensitive (aiohttp's ``CIMultiDict`` is).
    Raises Malformed for an undecodable header or for both headers at once.
    """
    v2 = headers.get(PAYMENT_SIGNATURE)
    v1 = headers.get(X_PAYMENT) if accept_v1 else None
    if v2 is not None and v1 is not None:
        raise Malformed(detail="both PAYMENT-SIGNATURE and X-PAYMENT present")
    if v2 is not None:
        return parse_payment_signature(v2)
    if v1 is not None:
        return parse_x_payment(v1)
    return None


def select_offer(payment: PaymentPayload, offered: list[Requirements]) -> Requirements:
    """Return the offered requirement the payment fulfils.

    Raises VerificationError: ``unsupported_scheme`` (no offer has that
    scheme), ``wrong_network`` (none on that network), or
    ``requirements_mismatch`` (``accepted`` differs from every offer). For
    v1, the first offer with the same scheme and network is chosen and the
    scheme verifier checks amount and payee against it.
    """
    same_scheme = [r for r in offered if r.scheme == payment.scheme]
    if not same_scheme:
        raise VerificationError("unsupported_scheme", f"scheme {payment.scheme!r} not offered")
    same_net = [r for r in same_scheme if r.network == payment.network]
    if not same_net:
        raise VerificationError("wrong_network", f"network {payment.network!r} not offered")
    if payment.accepted is None:
        return same_net[0]
    for r in same_net:
        if r.matches(payment.accepted):
            return r
    raise VerificationError("requirements_mismatch", "accepted matches no offered requirement")


@dataclass(frozen=True, slots=True)
class SettleResult:
    """A ``SettleResponse`` (the decoded ``PAYMENT-RESPONSE``)."""

    success: bool
    transaction: str
    network: str
    payer: str | None = None
    error_reason: str | None = None
    error_message: str | None = None
    amount: str | None = None
    extra: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"success": self.success}
        for k, v in (
            ("errorReason", self.error_reason),
            ("errorMessage", self.error_message),
            ("payer", self.payer),
        ):
            if v is not None:
                out[k] = v
        out["transaction"], out["network"] = self.transaction, self.network
        if self.amount is not None:
            out["amount"] = self.amount
        if self.extra is not None:
            out["extra"] = dict(self.extra)
        return out

    @classmethod
    def from_json(cls, obj: Any) -> SettleResult:
        o = _obj(obj, "settle")
        ok = o.get("success")
        if not isinstance(ok, bool):
            raise Malformed(detail="settle.success must be a boolean")
        extra = o.get("extra")
        return cls(
            ok,
            _opt(o, "transaction") or "",
            _str(o, "network", "settle"),
            _opt(o, "payer"),
            _opt(o, "errorReason"),
            _opt(o, "errorMessage"),
            _opt(o, "amount"),
            _obj(extra, "settle.extra") if extra is not None else None,
        )


def encode_payment_response(result: SettleResult) -> str:
    """The ``PAYMENT-RESPONSE`` header value for a settlement outcome."""
    return encode_header(result.to_json())


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Malformed(detail=f"{where} must be a JSON object")
    return value


def _str(o: Mapping[str, Any], name: str, where: str) -> str:
    v = o.get(name)
    if not isinstance(v, str) or not v:
        raise Malformed(detail=f"{where}.{name} must be a non-empty string")
    return v


def _opt(o: Mapping[str, Any], name: str) -> str | None:
    v = o.get(name)
    if v is not None and not isinstance(v, str):
        raise Malformed(detail=f"{name} must be a string")
    return v
