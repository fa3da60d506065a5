"""``[forward_auth]``: how long an edge may reuse a verdict, and which routes
the edge sends through popgate inline instead of deciding at the auth step.

    [forward_auth]
    cache_ttl = 30              # seconds an edge may reuse a reusable allow (0: never)
    inline_routes = ["paid"]    # policy routes answered "go inline" (refund on origin failure)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from popgate.gateway.ops.validation import Collector

MAX_CACHE_TTL = 3600


@dataclass(frozen=True, slots=True)
class ForwardAuthSettings:
    cache_ttl: int = 30
    inline_routes: frozenset[str] = frozenset()


def collect_settings(c: Collector, t: dict[str, Any], routes: frozenset[str] | None) -> ForwardAuthSettings:
    """Validate ``[forward_auth]``; ``routes`` are the policy file's routes (None: no policy file)."""
    c.unknown_keys("forward_auth", t, {"cache_ttl", "inline_routes"})
    ttl = c.number("forward_auth.cache_ttl", t.get("cache_ttl", 30), lo=0, hi=MAX_CACHE_TTL, integer=True)
    raw = t.get("inline_routes", [])
    names: list[str] = []
    if not isinstance(raw, list) or not all(isinstance(r, str) and r for r in raw):
        c.problem("forward_auth.inline_routes", f"expected a list of policy route names, got {raw!r}")
    else:
        names = raw
    for i, name in enumerate(names):
        if routes is not None and name not in routes:
            known = ", ".join(sorted(routes)) or "none"
            c.problem(f"forward_auth.inline_routes[{i}]", f"no policy route {name!r} (routes: {known})")
    return ForwardAuthSettings(int(ttl) if ttl is not None else 30, frozenset(names))
