"""The ``[crawlers]`` table: verified search-engine crawlers (on unless ``enabled = false``).

```toml
[crawlers]
# enabled = true
# crawlers = ["googlebot", "google-special", "bingbot", "applebot", "duckduckbot", "yandexbot", "baiduspider"]
# refresh = 86400                 # seconds between re-reading every range source (0: never)
# impostor_weight = 30            # policy weight for a crawler User-Agent from an address not theirs
# [crawlers.ranges]               # a crawler's range source: a file or an http(s) URL
# googlebot = "https://developers.google.com/static/search/apis/ipranges/googlebot.json"
# fcrdns = true                   # forward-confirmed reverse DNS for addresses outside the ranges
# nameservers = ["127.0.0.1:53"]  # default: /etc/resolv.conf
# dns_timeout = 2.0
# dns_concurrency = 16
# cache_ttl = 3600
# cache_size = 10000
```

Validated in the config's one pass (:func:`collect_settings`): local range files are read
and parsed now, so a bad one is a start-up error with its key path; a URL is fetched by the
refresher once the gateway runs (until then the shipped file, if any, answers).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from popgate.gateway.ops.validation import Collector
from popgate.gateway.schemes.fcrdns import FcrDnsSettings
from popgate.verifiers.crawlers import BUILTIN, Crawler, parse_ranges
from popgate.verifiers.errors import Malformed
from popgate.verifiers.net import Network

DATA = Path(__file__).resolve().parent.parent / "data" / "crawlers"
_NUMBERS: dict[str, tuple[float, float, float, bool]] = {
    "refresh": (86400, 0, 30 * 86400, True),
    "impostor_weight": (30, 0, 1000, True),
    "dns_timeout": (2.0, 0.05, 30, False),
    "dns_concurrency": (16, 1, 1024, True),
    "cache_ttl": (3600, 1, 7 * 86400, True),
    "cache_size": (10000, 1, 10**7, True),
}


@dataclass(frozen=True)
class CrawlerSettings:
    crawlers: tuple[Crawler, ...]
    ranges: dict[str, list[Network]]  # what is known at start-up, per crawler
    sources: dict[str, str]  # crawler -> file path or URL the refresher re-reads
    refresh: int = 86400
    impostor_weight: int = 30
    fcrdns: FcrDnsSettings | None = None
    numbers: dict[str, float] = field(default_factory=dict)


def collect_settings(c: Collector, raw: Any) -> CrawlerSettings | None:
    """Validate ``[crawlers]`` (absent: the defaults), recording problems in ``c``;
    None when turned off or when there were problems."""
    t = c.table("crawlers", {"crawlers": raw if raw is not None else {}})
    c.unknown_keys("crawlers", t, {"enabled", "crawlers", "ranges", "fcrdns", "nameservers", *_NUMBERS})
    before = len(c.problems)
    enabled = t.get("enabled", True)
    if not isinstance(enabled, bool):
        c.problem("crawlers.enabled", f"expected true or false, got {enabled!r}")
    nums = {}
    for name, (default, lo, hi, integer) in _NUMBERS.items():
        v = c.number(f"crawlers.{name}", t.get(name, default), lo=lo, hi=hi, integer=integer)
        nums[name] = float(v) if v is not None else default
    crawlers = _crawlers(c, t.get("crawlers"))
    sources, ranges = _ranges(c, c.table("ranges", t), crawlers)
    fcrdns = _fcrdns(c, t, nums)
    if len(c.problems) > before or enabled is not True:
        return None
    return CrawlerSettings(
        crawlers=crawlers,
        ranges=ranges,
        sources=sources,
        refresh=int(nums["refresh"]),
        impostor_weight=int(nums["impostor_weight"]),
        fcrdns=fcrdns,
        numbers=nums,
    )


def _crawlers(c: Collector, names: Any) -> tuple[Crawler, ...]:
    known = {k.name: k for k in BUILTIN}
    if names is None:
        return BUILTIN
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        c.problem("crawlers.crawlers", "expected a list of crawler names")
        return ()
    for i, n in enumerate(names):
        if n not in known:
            c.problem(f"crawlers.crawlers[{i}]", f"unknown crawler {n!r} (known: {', '.join(known)})")
    return tuple(known[n] for n in names if n in known)


def _ranges(
    c: Collector, table: dict[str, Any], crawlers: tuple[Crawler, ...]
) -> tuple[dict[str, str], dict[str, list[Network]]]:
    names = {k.name for k in crawlers}
    sources = {k.name: str(DATA / k.ranges) for k in crawlers if k.ranges}
    for name, src in table.items():
        if name not in names:
            c.problem(f"crawlers.ranges.{name}", f"not a configured crawler ({', '.join(sorted(names))})")
        elif not isinstance(src, str) or not src:
            c.problem(f"crawlers.ranges.{name}", "expected a file path or an http(s):// URL")
        else:
            sources[name] = src
    ranges: dict[str, list[Network]] = {}
    for name, src in sources.items():
        shipped = next((k.ranges for k in crawlers if k.name == name), None)
        path = (
            src if not src.startswith(("http://", "https://")) else (str(DATA / shipped) if shipped else "")
        )
        if not path:
            continue  # a URL with no shipped copy: known once the refresher fetched it
        try:
            ranges[name] = parse_ranges(json.loads(Path(path).read_text()), name)
        except OSError as exc:
            c.problem(f"crawlers.ranges.{name}", f"cannot read {path}: {exc.strerror}")
        except ValueError:
            c.problem(f"crawlers.ranges.{name}", f"{path}: not JSON")
        except Malformed as exc:
            c.problem(f"crawlers.ranges.{name}", f"{path}: {exc.detail}")
    return sources, ranges


def _fcrdns(c: Collector, t: dict[str, Any], nums: dict[str, float]) -> FcrDnsSettings | None:
    on = t.get("fcrdns", False)
    if not isinstance(on, bool):
        c.problem("crawlers.fcrdns", f"expected true or false, got {on!r}")
        return None
    servers = _nameservers(c, t.get("nameservers"))
    if not on:
        return None
    return FcrDnsSettings(
        servers=tuple(servers),
        timeout=nums["dns_timeout"],
        concurrency=int(nums["dns_concurrency"]),
        cache_ttl=nums["cache_ttl"],
        cache_size=int(nums["cache_size"]),
    )


def _nameservers(c: Collector, value: Any) -> list[tuple[str, int]]:
    if value is None:
        return system_nameservers()
    if not isinstance(value, list) or not value:
        c.problem("crawlers.nameservers", 'expected a list of "HOST" or "HOST:PORT"')
        return []
    out = []
    for i, item in enumerate(value):
        host, sep, port = str(item).rpartition(":") if str(item).count(":") == 1 else (str(item), "", "")
        if not sep:
            host, port = str(item).strip("[]"), "53"
        if not port.isdigit() or not 0 < int(port) < 65536 or not host:
            c.problem(f"crawlers.nameservers[{i}]", f'expected "HOST" or "HOST:PORT", got {item!r}')
            continue
        out.append((host, int(port)))
    return out


def system_nameservers(path: str = "/etc/resolv.conf") -> list[tuple[str, int]]:
    """The ``nameserver`` lines of resolv.conf (port 53)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    return [(p[1], 53) for p in (line.split() for line in lines) if len(p) >= 2 and p[0] == "nameserver"]
