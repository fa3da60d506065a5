"""Search-engine crawlers: who they say they are (User-Agent), where they crawl from
(the address ranges their operators publish) and which reverse-DNS domains are theirs.

Pure: :func:`parse_ranges` reads a published range document (Google's and Bing's
``{"creationTime", "prefixes": [{"ipv4Prefix"|"ipv6Prefix": CIDR}]}``, or a plain
list of CIDRs), :class:`RangeTable` answers "whose range holds this address" with a
few dict lookups, :class:`UserAgents` finds the crawler a User-Agent names, and
:func:`host_is_theirs` checks a reverse-DNS name against the crawler's domains.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from popgate.verifiers.errors import Malformed
from popgate.verifiers.net import IPAddress, Network

# Broader than this is no crawler's range: a typo or a hostile file, refused.
MIN_PREFIX = {4: 8, 6: 24}


@dataclass(frozen=True, slots=True)
class Crawler:
    """A crawler popgate knows: its name, User-Agent tokens, range file, rDNS domains."""

    name: str
    tokens: tuple[str, ...]  # product tokens in its User-Agent (case-insensitive)
    ranges: str | None  # the shipped data file (gateway/data/crawlers/), None: rDNS only
    domains: tuple[str, ...]  # reverse-DNS names end with one of these (FCrDNS)
    source: str = ""  # where the operator publishes the ranges


BUILTIN: tuple[Crawler, ...] = (
    Crawler(
        "google-special",
        ("adsbot-google-mobile", "adsbot-google", "mediapartners-google", "apis-google", "google-safety"),
        "special-crawlers.json",
        ("google.com",),
        "https://developers.google.com/static/search/apis/ipranges/special-crawlers.json",
    ),
    Crawler(
        "googlebot",
        ("googlebot", "storebot-google", "google-inspectiontool", "googleother"),
        "googlebot.json",
        ("googlebot.com", "google.com"),
        "https://developers.google.com/static/search/apis/ipranges/googlebot.json",
    ),
    Crawler(
        "bingbot",
        ("bingbot", "bingpreview", "msnbot", "adidxbot"),
        "bingbot.json",
        ("search.msn.com",),
        "https://www.bing.com/toolbox/bingbot.json",
    ),
    Crawler(
        "applebot",
        ("applebot",),
        "applebot.json",
        ("applebot.apple.com",),
        "https://search.developer.apple.com/applebot.json",
    ),
    Crawler(
        "duckduckbot", ("duckduckbot",), "duckduckbot.json", (), "https://duckduckgo.com/duckduckbot.json"
    ),
    Crawler("yandexbot", ("yandexbot", "yandeximages"), None, ("yandex.ru", "yandex.net", "yandex.com")),
    Crawler("baiduspider", ("baiduspider",), None, ("baidu.com", "baidu.jp")),
)


# Every token holds one of these: a User-Agent holding none (a browser's) is settled by a
# few substring checks, without running the token regex (6 µs on a browser UA, 0.5 µs this way).
ANCHORS = ("bot", "google", "spider", "yandex", "preview")


class UserAgents:
    """Which crawler a User-Agent names: :meth:`claimed`."""

    __slots__ = ("anchors", "by_token", "pattern")

    def __init__(self, crawlers: Iterable[Crawler]) -> None:
        self.by_token: dict[str, Crawler] = {t: c for c in crawlers for t in c.tokens}
        # longest first: "adsbot-google-mobile" before "adsbot-google"
        alts = "|".join(re.escape(t) for t in sorted(self.by_token, key=len, reverse=True))
        self.pattern = re.compile(rf"(?<![a-z0-9-])(?:{alts})(?![a-z0-9-])" if alts else r"(?!x)x")
        covered = all(any(a in t for a in ANCHORS) for t in self.by_token)
        self.anchors = ANCHORS if covered else ("",)  # "" is in every string: always the regex

    def claimed(self, ua: str) -> Crawler | None:
        """The crawler whose product token the User-Agent carries, or None."""
        low = ua.lower()
        for anchor in self.anchors:
            if anchor in low:
                m = self.pattern.search(low)
                return self.by_token[m.group(0)] if m is not None else None
        return None


def parse_ranges(doc: Any, where: str = "ranges") -> list[Network]:
    """The networks of a published range document. Raises Malformed (with every bad
    entry in its detail) for anything else, a non-public network or one too broad."""
    items = doc.get("prefixes") if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise Malformed(detail=f"{where}: expected {{'prefixes': [...]}} or a list of CIDRs")
    nets: list[Network] = []
    bad: list[str] = []
    for i, item in enumerate(items):
        text = item if isinstance(item, str) else _prefix_of(item)
        try:
            net = ipaddress.ip_network(str(text), strict=False)
        except ValueError:
            bad.append(f"{where}[{i}]: not a network: {text!r}")
            continue
        if net.prefixlen < MIN_PREFIX[net.version] or not net.is_global:
            bad.append(f"{where}[{i}]: {net} is too broad or not public")
            continue
        nets.append(net)
    if bad:
        raise Malformed(detail="; ".join(bad[:5]) + (f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""))
    if not nets:
        raise Malformed(detail=f"{where}: no networks")
    return nets


def _prefix_of(item: Any) -> Any:
    if isinstance(item, dict):
        return item.get("ipv4Prefix") or item.get("ipv6Prefix")
    return item


class RangeTable:
    """Address -> crawler name, over every crawler's networks (immutable once built)."""

    __slots__ = ("_by_len", "count")

    def __init__(self, ranges: Mapping[str, Iterable[Network]]) -> None:
        by_len: dict[tuple[int, int], dict[int, str]] = {}
        count = 0
        for name, nets in ranges.items():
            for net in nets:
                by_len.setdefault((net.version, net.prefixlen), {})[int(net.network_address)] = name
                count += 1
        # longest prefixes first: the most specific range decides
        self._by_len = sorted(by_len.items(), key=lambda kv: -kv[0][1])
        self.count = count

    def lookup(self, ip: IPAddress) -> str | None:
        """The crawler whose published range holds ``ip``, or None."""
        version, value = ip.version, int(ip)
        bits = 32 if version == 4 else 128
        for (v, plen), table in self._by_len:
            if v == version:
                name = table.get(value >> (bits - plen) << (bits - plen))
                if name is not None:
                    return name
        return None


def host_is_theirs(host: str, domains: Iterable[str]) -> bool:
    """Is ``host`` (a PTR name) one of the domains, or under one of them?"""
    host = host.rstrip(".").lower()
    return any(host == d or host.endswith("." + d) for d in domains)
