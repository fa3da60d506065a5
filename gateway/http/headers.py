"""Header rules of a reverse proxy: hop-by-hop removal, forwarding headers,
the client address behind trusted proxies, the ``PoP-*`` headers popgate
alone may set for the origin, and :class:`Credentials`: the one table of
popgate's own credentials, stripped on the HTTP and the WebSocket path alike.
Addresses (``IPAddress``, ``parse_ip``) come from ``verifiers.net``, re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from popgate.verifiers.net import IPAddress, Network, parse_ip

__all__ = [
    "Credentials",
    "IPAddress",
    "Network",
    "client_address",
    "connection_tokens",
    "is_popgate_authorization",
    "is_trusted",
    "parse_ip",
]

# RFC 9110 §7.6.1 plus the legacy names proxies still meet.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
    }
)
# Set by popgate for the origin; never taken from a client.
FORWARDING = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded", "x-real-ip", "host"}
)
POP_PREFIX = "pop-"
# popgate's own evidence headers (``PoP-*`` go by prefix); x402's only when popgate takes x402.
EVIDENCE = frozenset({"x-hashcash"})
PAYMENT = frozenset({"payment-signature", "x-payment"})
API_KEY_PREFIX = "pgk_"


class Credentials:
    """popgate's credentials in a request, which never reach the origin:

    - ``Authorization: PoP …`` / ``PoP-Puzzle …`` (any ``PoP-`` scheme) and ``Bearer pgk_…``;
    - the session cookie (only that cookie: the others pass);
    - ``PoP-*`` and ``X-Hashcash``; ``PAYMENT-SIGNATURE`` / ``X-PAYMENT`` when ``payments``.
    """

    __slots__ = ("cookie_prefix", "headers")  # headers: dropped by name (and PoP-* by prefix)

    def __init__(self, cookie_name: str, *, payments: bool) -> None:
        self.cookie_prefix = cookie_name + "="
        self.headers = EVIDENCE | PAYMENT if payments else EVIDENCE

    def clean(self, low: str, value: str) -> str | None:
        """``value`` without popgate's credential in it; None to drop the header."""
        if low == "authorization":
            return None if is_popgate_authorization(value) else value
        if low == "cookie" and self.cookie_prefix in value:
            prefix = self.cookie_prefix
            parts = (c.strip() for c in value.split(";"))
            kept = "; ".join(p for p in parts if p and not p.startswith(prefix))
            return kept or None
        return value


def is_popgate_authorization(value: str) -> bool:
    """``PoP <token>``, ``PoP-Puzzle <solution>`` (any ``PoP-`` scheme), ``PrivateToken …``
    (a Privacy Pass token redeemed here) or ``Bearer pgk_…``."""
    parts = value.split(None, 1)
    if not parts:
        return False
    scheme, rest = parts[0].lower(), parts[1] if len(parts) > 1 else ""
    return (
        scheme == "pop"
        or scheme.startswith(POP_PREFIX)
        or scheme == "privatetoken"
        or (scheme == "bearer" and rest.strip().startswith(API_KEY_PREFIX))
    )


def connection_tokens(values: Iterable[str]) -> frozenset[str]:
    """Header names listed in ``Connection`` (they are hop-by-hop too)."""
    out = set()
    for value in values:
        for token in value.split(","):
            token = token.strip().lower()
            if token:
                out.add(token)
    return frozenset(out)


def is_trusted(addr: IPAddress, trusted: Sequence[Network]) -> bool:
    return any(addr in net for net in trusted)


def client_address(peer: IPAddress, xff: Sequence[str], trusted: Sequence[Network]) -> IPAddress:
    """The client's address: walk XFF right to left past trusted proxies.

    XFF is only believed when the peer itself is a trusted proxy; the first
    untrusted (or unparsable-before-it) hop from the right is the client.
    """
    if not trusted or not is_trusted(peer, trusted):
        return peer
    hops = [h for value in xff for h in value.split(",")]
    current = peer
    for hop in reversed(hops):
        addr = parse_ip(hop)
        if addr is None:
            return current
        current = addr
        if not is_trusted(addr, trusted):
            return addr
    return current
