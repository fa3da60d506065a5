"""Header rules of a reverse proxy: hop-by-hop removal, forwarding headers,
the client address behind trusted proxies, and the ``PoP-*`` headers popgate
alone may set for the origin.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

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


_PARSED: dict[str, IPAddress | None] = {}


def parse_ip(text: str) -> IPAddress | None:
    """Parse an address as it appears in XFF or a peer name; None if invalid.

    Results are memoized in a small table (peers repeat: keep-alive, NAT),
    cleared whenever it reaches 4096 entries.
    """
    try:
        return _PARSED[text]
    except KeyError:
        pass
    if len(_PARSED) >= 4096:
        _PARSED.clear()
    addr = _parse_ip(text)
    _PARSED[text] = addr
    return addr


def _parse_ip(text: str) -> IPAddress | None:
    text = text.strip()
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:  # IPv4 with a port
        text = text.split(":", 1)[0]
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


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


def network_of(addr: IPAddress, v4_prefix: int = 24, v6_prefix: int = 64) -> str:
    """The client network a puzzle or rate bucket binds to (a /24 or /64)."""
    if addr.version == 4 and v4_prefix == 24:
        p = addr.packed
        return f"{p[0]}.{p[1]}.{p[2]}.0/24"
    if addr.version == 6 and v6_prefix == 64:
        return f"{ipaddress.IPv6Address(int(addr) >> 64 << 64).compressed}/64"
    prefix = v4_prefix if addr.version == 4 else v6_prefix
    return str(ipaddress.ip_network((addr, prefix), strict=False))
