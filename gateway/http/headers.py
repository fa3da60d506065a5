"""Header rules of a reverse proxy: hop-by-hop removal, forwarding headers,
the client address behind trusted proxies, and the ``PoP-*`` headers popgate
alone may set for the origin. Addresses (``IPAddress``, ``parse_ip``) come
from ``verifiers.net``, re-exported here.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from popgate.verifiers.net import IPAddress, Network, parse_ip

__all__ = ["IPAddress", "Network", "client_address", "connection_tokens", "is_trusted", "parse_ip"]

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
