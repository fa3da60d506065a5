"""Crawler ranges, User-Agent claims and rDNS domains (verifiers/crawlers.py)."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.schemes.crawlers_config import DATA
from popgate.verifiers.crawlers import BUILTIN, RangeTable, UserAgents, host_is_theirs, parse_ranges
from popgate.verifiers.errors import Malformed

AGENTS = UserAgents(BUILTIN)


@pytest.mark.parametrize(
    ("ua", "name"),
    [
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", "googlebot"),
        (
            "Mozilla/5.0 (Linux; Android 6.0.1; Nexus 5X) Chrome/120 Mobile Safari/537.36 "
            "(compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
            "googlebot",
        ),
        ("AdsBot-Google-Mobile (+http://www.google.com/mobile/adsbot.html)", "google-special"),
        ("Mediapartners-Google", "google-special"),
        ("Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0)", "bingbot"),
        (
            "Mozilla/5.0 (Macintosh) Safari/605.1.15 (Applebot/0.1; +http://www.apple.com/go/applebot)",
            "applebot",
        ),
        ("DuckDuckBot/1.1; (+http://duckduckgo.com/duckduckbot.html)", "duckduckbot"),
        ("Mozilla/5.0 (compatible; YandexBot/3.0; +http://yandex.com/bots)", "yandexbot"),
        ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0 Safari/537.36", None),
        ("NotGooglebotReally/1.0", None),
        ("Applebot-Extended", None),
    ],
)
def test_user_agent_claims(ua, name):
    """Known product tokens name their crawler; look-alikes and browsers name none."""
    c = AGENTS.claimed(ua)
    assert (c.name if c else None) == name


@given(st.text(max_size=200))
def test_anchor_shortcut_agrees_with_the_regex(ua):
    """The substring shortcut never hides a token the regex would find."""
    m = AGENTS.pattern.search(ua.lower())
    expect = AGENTS.by_token[m.group(0)] if m else None
    assert AGENTS.claimed(ua) == expect
    assert AGENTS.claimed(ua + " Googlebot/2.1").name == (expect.name if expect else "googlebot")


def test_shipped_files_parse_and_hold_known_addresses():
    """Every shipped range file parses; a known crawler address is in its crawler's range."""
    ranges = {k.name: parse_ranges(json.loads((DATA / k.ranges).read_text())) for k in BUILTIN if k.ranges}
    table = RangeTable(ranges)
    assert table.lookup(ipaddress.ip_address("66.249.66.1")) == "googlebot"
    assert table.lookup(ipaddress.ip_address("2001:4860:4801:10::7")) == "googlebot"
    assert table.lookup(ipaddress.ip_address("157.55.39.10")) == "bingbot"
    assert table.lookup(ipaddress.ip_address("17.241.208.170")) == "applebot"
    assert table.lookup(ipaddress.ip_address("203.0.113.7")) is None
    assert table.lookup(ipaddress.ip_address("66.249.66.32")) is not None  # next /27
    assert table.count > 600


def test_more_specific_range_wins():
    t = RangeTable({"a": [ipaddress.ip_network("8.8.0.0/16")], "b": [ipaddress.ip_network("8.8.8.0/24")]})
    assert t.lookup(ipaddress.ip_address("8.8.8.8")) == "b"
    assert t.lookup(ipaddress.ip_address("8.8.9.9")) == "a"


@pytest.mark.parametrize(
    "doc",
    [
        {"prefixes": [{"ipv4Prefix": "0.0.0.0/0"}]},
        {"prefixes": [{"ipv4Prefix": "10.0.0.0/24"}]},
        {"prefixes": [{"ipv6Prefix": "2001:db8::/48"}]},
        {"prefixes": [{"ipv4Prefix": "not-a-cidr"}]},
        {"prefixes": []},
        {"no": "prefixes"},
        "junk",
    ],
)
def test_bad_range_documents_are_refused(doc):
    """Too broad, private, documentation, garbage or empty: Malformed, never a wide open range."""
    with pytest.raises(Malformed):
        parse_ranges(doc)


@given(
    st.recursive(st.none() | st.text() | st.integers(), lambda c: st.lists(c) | st.dictionaries(st.text(), c))
)
def test_parse_ranges_never_crashes(doc):
    try:
        parse_ranges(doc)
    except Malformed:
        pass


@given(st.integers(0, 2**32 - 1))
def test_lookup_agrees_with_ipaddress(value):
    """The table's answer is what ipaddress membership says."""
    nets = [ipaddress.ip_network(n) for n in ("66.249.64.0/27", "66.249.66.0/27", "157.55.39.0/24")]
    ip = ipaddress.IPv4Address(value)
    expect = "x" if any(ip in n for n in nets) else None
    assert RangeTable({"x": nets}).lookup(ip) == expect


def test_host_domains():
    assert host_is_theirs("crawl-66-249-66-1.googlebot.com.", ("googlebot.com",))
    assert host_is_theirs("GOOGLEBOT.COM", ("googlebot.com",))
    assert not host_is_theirs("crawl.googlebot.com.evil.test", ("googlebot.com",))
    assert not host_is_theirs("evilgooglebot.com", ("googlebot.com",))
