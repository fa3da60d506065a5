"""Client addresses and the networks they are bound to: the one IP type,
parser and ``network_of`` for the gateway, the policies and the verifiers.

An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is its IPv4 address
everywhere: :func:`parse_ip` returns the IPv4 form and :func:`network_of`
gives it the IPv4 prefix, so a dual-stack socket and a plain IPv4 one bind a
client to the same /24.
"""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

_PARSED: dict[str, IPAddress | None] = {}


def parse_ip(text: str) -> IPAddress | None:
    """Parse an address as it appears in XFF or a peer name; None if invalid.

    ``[v6]:port`` and ``v4:port`` lose the port; IPv4-mapped IPv6 becomes
    IPv4. Results are memoized in a small table (peers repeat: keep-alive,
    NAT), cleared whenever it reaches 4096 entries.
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
    return unmap(addr)


def unmap(addr: IPAddress) -> IPAddress:
    """``addr``, or its IPv4 address when it is IPv4-mapped IPv6."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def network_of(ip: IPAddress | str, v4_prefix: int = 24, v6_prefix: int = 64) -> str:
    """The client network a puzzle, session or rate bucket binds to: the /24
    of an IPv4 address, the /64 of an IPv6 one (both configurable), e.g.
    ``203.0.113.0/24`` or ``2001:db8:1:2::/64``.

    IPv4-mapped IPv6 addresses count as IPv4. Raises ValueError for a string
    that is not an IP address.
    """
    addr = unmap(ipaddress.ip_address(ip) if isinstance(ip, str) else ip)
    if addr.version == 4:
        if v4_prefix == 24:  # the hot path
            p = addr.packed
            return f"{p[0]}.{p[1]}.{p[2]}.0/24"
        masked = int(addr) >> (32 - v4_prefix) << (32 - v4_prefix)
        return f"{ipaddress.IPv4Address(masked)}/{v4_prefix}"
    masked = int(addr) >> (128 - v6_prefix) << (128 - v6_prefix)
    return f"{ipaddress.IPv6Address(masked).compressed}/{v6_prefix}"
