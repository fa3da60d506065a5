"""The compiled policy and its matcher.

:meth:`Policy.match` is the per-request entry point: given a
:class:`~policies.model.RequestView` and the client's class it returns a
precomputed :class:`~policies.model.Match`. Evaluation order:

1. ``/.well-known/popgate`` and everything under it (normalized path) is
   always allowed, whatever the file says: the gateway serves those endpoints
   itself (it must never proxy them upstream);
2. rules in file order: a *weigh* rule that matches adds its weight and
   evaluation goes on; the first matching *terminal* rule decides, using its
   action for the class or, when it names none for that class, the default;
3. if no terminal rule matched, the highest threshold whose weight the total
   reaches decides (same fallback to the default per class);
4. otherwise the ``[default]`` table, which names every class: there is no
   implicit allow.

:class:`PolicyHolder` keeps the current policy; :meth:`PolicyHolder.reload`
compiles a new one and swaps it in with one attribute assignment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from popgate.policies.model import ALLOW, Match, RequestView
from popgate.policies.pathnorm import normalize_path

POPGATE_PREFIX = "/.well-known/popgate"
_POPGATE = Match(ALLOW, "popgate-endpoints", "popgate")


class Req:
    """Per-request derived values, computed once and shared by all rules."""

    __slots__ = ("host", "ip_int", "ip_version", "npath", "view")

    def __init__(self, view: RequestView) -> None:
        self.view = view
        host = view.host
        if host.startswith("["):
            host = host[1 : host.find("]")] if "]" in host else host
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        self.host = host.lower()
        self.npath = normalize_path(view.path)
        ip = view.client_ip
        if ip.version == 6 and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        self.ip_int = int(ip)
        self.ip_version = ip.version


Check = Callable[[Req], bool]


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule: ``checks`` all true → it matches."""

    name: str
    route: str
    checks: tuple[Check, ...]
    weight: int  # > 0 for weigh rules, 0 for terminal ones
    results: dict[str, Match] | None  # per class, for terminal rules

    def matches(self, req: Req) -> bool:
        for check in self.checks:  # noqa: SIM110 - per rule and request: a loop is faster than all(genexpr)
            if not check(req):
                return False
        return True


@dataclass(frozen=True, slots=True)
class Threshold:
    name: str
    weight: int
    results: dict[str, Match]


@dataclass(frozen=True, slots=True)
class Policy:
    """A compiled, immutable policy. Build it with :func:`policies.loader.load`."""

    rules: tuple[Rule, ...]
    thresholds: tuple[Threshold, ...]  # sorted by weight, highest first
    default: dict[str, Match]
    source: str = "<memory>"

    def match(self, view: RequestView, klass: str, weight: int = 0) -> Match:
        """Decide ``view`` for a client of class ``klass``.

        ``weight`` is extra suspicion from classification heuristics; it adds
        to what weigh rules contribute. Raises KeyError for an unknown class.
        """
        req = Req(view)
        npath = req.npath
        if npath.startswith(POPGATE_PREFIX) and (
            len(npath) == len(POPGATE_PREFIX) or npath[len(POPGATE_PREFIX)] == "/"
        ):
            return _POPGATE
        for rule in self.rules:
            if rule.matches(req):
                if rule.results is None:
                    weight += rule.weight
                    continue
                return rule.results[klass]
        if weight > 0:
            for t in self.thresholds:
                if weight >= t.weight:
                    return t.results[klass]
        return self.default[klass]


class PolicyHolder:
    """Holds the current :class:`Policy`; swaps it atomically on reload.

    Readers take ``holder.current`` once per request and use that object to
    the end, so a reload never mixes two policies in one decision.
    """

    __slots__ = ("current", "path")

    def __init__(self, policy: Policy, path: str | Path | None = None) -> None:
        self.current = policy
        self.path = Path(path) if path is not None else None

    def reload(self, path: str | Path | None = None) -> Policy:
        """Compile the file again and swap it in. Raises
        :class:`policies.loader.PolicyError` (keeping the old policy) when the
        new file is invalid."""
        from popgate.policies.loader import load

        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no policy file to reload")
        policy = load(target)
        self.current = policy
        self.path = target
        return policy
