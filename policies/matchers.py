"""Compile a rule's matchers into a tuple of cheap predicates over :class:`Req`.

Cheapest first: method (frozenset), path (one compiled regex for all globs and
regexes of the rule), host, user agent, headers, declared agent, networks
(prefix ints grouped by prefix length: one shift and one set lookup each).

Globs: ``*`` matches within one path segment (or one host label), ``**``
across segments, ``?`` one character; the whole path must match. Paths match
case-insensitively unless ``case_sensitive = true`` (see README). Hosts are
compared in the form :func:`policies.hostnorm.normalize_host` gives the request's
host (lower case, no port, no trailing dot, IDNA A-labels); rule globs are
brought to the same form.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from popgate.policies.actions import Problems
from popgate.policies.hostnorm import normalize_host_glob
from popgate.policies.request import Check, Req


def glob_to_regex(glob: str, sep: str = "/") -> str:
    """Translate a glob to a regex body (not anchored)."""
    out: list[str] = []
    i = 0
    while i < len(glob):
        c = glob[i]
        if glob.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        out.append(
            f"[^{re.escape(sep)}]*" if c == "*" else f"[^{re.escape(sep)}]" if c == "?" else re.escape(c)
        )
        i += 1
    return "".join(out)


def _strings(p: Problems, where: str, value: Any) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(s, str) and s for s in items):
        p.add(where, f"expected a non-empty string or list of strings, got {value!r}")
        return []
    return items


def _host_glob(p: Problems, where: str, glob: str) -> str:
    try:
        return normalize_host_glob(glob)
    except UnicodeError as exc:
        p.add(where, f"invalid host {glob!r}: {exc}")
        return glob.lower()


def _regex(p: Problems, where: str, pattern: str, flags: int = 0) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern, flags)
    except re.error as exc:
        p.add(where, f"invalid regex {pattern!r}: {exc}")
        return None


def compile_checks(p: Problems, where: str, r: dict[str, Any]) -> tuple[tuple[Check, ...], int]:
    """Return the rule's predicates and how many of the first ones read only the
    request target (method, path, host); record every problem found."""
    checks: list[Check] = []
    if "methods" in r:
        methods = frozenset(m.upper() for m in _strings(p, f"{where}.methods", r["methods"]))
        checks.append(_method_check(methods))
    path = _path_check(p, where, r)
    if path is not None:
        checks.append(path)
    if "host" in r:
        hosts = _strings(p, f"{where}.host", r["host"])
        body = "|".join(glob_to_regex(_host_glob(p, f"{where}.host", h), ".") for h in hosts)
        rx = _regex(p, f"{where}.host", f"(?:{body})\\Z")
        if rx is not None:
            checks.append(_host_check(rx))
    keyed = len(checks)
    if "user_agent" in r:
        ua = r["user_agent"]
        rx = _regex(p, f"{where}.user_agent", ua) if isinstance(ua, str) else None
        if not isinstance(ua, str):
            p.add(f"{where}.user_agent", f"expected a regex string, got {ua!r}")
        if rx is not None:
            checks.append(_user_agent_check(rx))
    checks.extend(_header_checks(p, where, r))
    if "declared_agent" in r:
        globs = _strings(p, f"{where}.declared_agent", r["declared_agent"])
        rx = _regex(
            p,
            f"{where}.declared_agent",
            "(?:" + "|".join(glob_to_regex(g, "\0") for g in globs) + ")\\Z",
            re.IGNORECASE,
        )
        if rx is not None:
            checks.append(_declared_agent_check(rx))
    if "networks" in r:
        net = _network_check(p, f"{where}.networks", r["networks"])
        if net is not None:
            checks.append(net)
    return tuple(checks), keyed


def _path_check(p: Problems, where: str, r: dict[str, Any]) -> Check | None:
    form = r.get("path_form", "normalized")
    if form not in ("normalized", "raw"):
        p.add(f"{where}.path_form", f"expected normalized or raw, got {form!r}")
    cs = r.get("case_sensitive", False)
    if not isinstance(cs, bool):
        p.add(f"{where}.case_sensitive", f"expected true or false, got {cs!r}")
    parts: list[str] = []
    if "path" in r:
        for i, g in enumerate(_strings(p, f"{where}.path", r["path"])):
            if not g.startswith("/"):
                p.add(f"{where}.path[{i}]", f"a path glob starts with '/', got {g!r}")
            parts.append(glob_to_regex(g))
    if "path_regex" in r:
        for i, pattern in enumerate(_strings(p, f"{where}.path_regex", r["path_regex"])):
            if _regex(p, f"{where}.path_regex[{i}]", pattern) is not None:
                parts.append(f"(?:{pattern})")
    if not parts:
        return None
    rx = _regex(p, f"{where}.path", "(?:" + "|".join(parts) + ")\\Z", 0 if cs is True else re.IGNORECASE)
    if rx is None:
        return None
    m = rx.match
    if form == "raw":
        return lambda q: m(q.view.path) is not None
    return lambda q: m(q.npath) is not None


def _header_checks(p: Problems, where: str, r: dict[str, Any]) -> list[Check]:
    checks: list[Check] = []
    headers = r.get("headers", {})
    if not isinstance(headers, dict):
        p.add(f"{where}.headers", "expected a table of header-name = regex")
        headers = {}
    for name, pattern in headers.items():
        rx = _regex(p, f"{where}.headers.{name}", pattern) if isinstance(pattern, str) else None
        if not isinstance(pattern, str):
            p.add(f"{where}.headers.{name}", f"expected a regex string, got {pattern!r}")
        if rx is not None:
            checks.append(_header_check(name.lower(), rx))
    if "headers_absent" in r:
        names = tuple(n.lower() for n in _strings(p, f"{where}.headers_absent", r["headers_absent"]))
        checks.append(_headers_absent_check(names))
    return checks


# One factory per predicate: each binds its own values (a lambda in a loop would not).
def _method_check(methods: frozenset[str]) -> Check:
    return lambda q: q.view.method in methods


def _host_check(rx: re.Pattern[str]) -> Check:
    m = rx.match
    return lambda q: m(q.host) is not None


def _user_agent_check(rx: re.Pattern[str]) -> Check:
    s = rx.search
    return lambda q: s(q.view.user_agent) is not None


def _declared_agent_check(rx: re.Pattern[str]) -> Check:
    m = rx.match
    return lambda q: q.view.declared_agent is not None and m(q.view.declared_agent) is not None


def _header_check(name: str, rx: re.Pattern[str]) -> Check:
    s = rx.search
    return lambda q: (v := q.view.headers.get(name)) is not None and s(v) is not None


def _headers_absent_check(names: tuple[str, ...]) -> Check:
    return lambda q: any(q.view.headers.get(n) is None for n in names)


def _network_check(p: Problems, where: str, value: Any) -> Check | None:
    groups: dict[tuple[int, int], set[int]] = {}
    for i, s in enumerate(_strings(p, where, value)):
        try:
            net = ipaddress.ip_network(s, strict=True)
        except ValueError as exc:
            p.add(f"{where}[{i}]", f"invalid CIDR {s!r}: {exc}")
            continue
        width = net.max_prefixlen
        groups.setdefault((net.version, net.prefixlen), set()).add(
            int(net.network_address) >> (width - net.prefixlen)
        )
    table = tuple((v, (32 if v == 4 else 128) - plen, frozenset(s)) for (v, plen), s in groups.items())
    if not table:
        return None

    def check(q: Req) -> bool:
        ver, ip = q.ip_version, q.ip_int
        for v, shift, prefixes in table:  # noqa: SIM110 - per request: a loop is faster than any(genexpr)
            if v == ver and ip >> shift in prefixes:
                return True
        return False

    return check
