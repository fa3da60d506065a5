"""verifiers.net: one network_of for everyone; IPv4-mapped IPv6 is its IPv4 address."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from popgate.verifiers.net import network_of, parse_ip
from popgate.verifiers.spend import key

v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
v6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address).filter(lambda a: a.ipv4_mapped is None)


@given(v4, st.integers(0, 32))
def test_mapped_v6_is_its_v4(addr: ipaddress.IPv4Address, prefix: int) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{addr}")
    assert network_of(mapped, prefix) == network_of(addr, prefix) == network_of(str(mapped), prefix)
    assert parse_ip(str(mapped)) == parse_ip(f"[{mapped}]:443") == addr


@given(v4, st.integers(0, 32))
def test_v4_network_unchanged(addr: ipaddress.IPv4Address, prefix: int) -> None:
    """Same string as ip_network (what both former network_of spelled)."""
    want = str(ipaddress.ip_network((addr, prefix), strict=False))
    assert network_of(addr, prefix) == network_of(str(addr), prefix) == want
    assert (
        key("gcra", f"n:{network_of(addr)}")
        == f"pg:{{gcra:n:{ipaddress.ip_network((addr, 24), strict=False)}}}"
    )


@given(v6, st.integers(0, 128))
def test_v6_network_unchanged(addr: ipaddress.IPv6Address, prefix: int) -> None:
    want = str(ipaddress.ip_network((addr, prefix), strict=False))
    assert network_of(addr, 24, prefix) == network_of(str(addr), 24, prefix) == want
    assert network_of(addr) == str(ipaddress.ip_network((addr, 64), strict=False))


def test_examples() -> None:
    assert network_of("203.0.113.77") == "203.0.113.0/24"
    assert network_of("::ffff:203.0.113.77") == "203.0.113.0/24"
    assert network_of("2001:db8:1:2::5") == "2001:db8:1:2::/64"
    assert key("puzzle", "abc") == "pg:{puzzle:abc}"
