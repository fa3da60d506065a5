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

Per-request derived values (:class:`~policies.request.Req`) live in
:mod:`policies.request`; :class:`~policies.holder.PolicyHolder` keeps the
current policy and reloads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from popgate.policies.model import ALLOW, Match, RequestView, Trace
from popgate.policies.request import Check, Req

POPGATE_PREFIX = "/.well-known/popgate"
_POPGATE = Match(ALLOW, "popgate-endpoints", "popgate")
MEMO_MAX = 4096  # targets whose plan is kept per compiled policy


@dataclass(frozen=True, slots=True)
class Rule:
    """A compiled rule: ``checks`` all true → it matches."""

    name: str
    route: str
    checks: tuple[Check, ...]
    weight: int  # > 0 for weigh rules, 0 for terminal ones
    results: dict[str, Match] | None  # per class, for terminal rules
    keyed: int = 0  # how many leading checks read only method, path and host
    head: tuple[Check, ...] = field(init=False, compare=False, repr=False)  # checks[:keyed]
    rest: tuple[Check, ...] = field(init=False, compare=False, repr=False)  # checks[keyed:]

    def __post_init__(self) -> None:
        object.__setattr__(self, "head", self.checks[: self.keyed])
        object.__setattr__(self, "rest", self.checks[self.keyed :])

    def target_decides(self, req: Req) -> bool | None:
        """Whether the rule matches, or None when that depends on more than the
        request target (a user agent, header, declared agent or network check ran)."""
        checks = self.checks
        for i, check in enumerate(checks):
            if not check(req):
                return False if i < self.keyed else None
        return True if len(checks) == self.keyed else None

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
    # (method, host, path) → the target's *plan*: the rules whose target-only checks pass
    # (``Rule.head``), in order, up to the first terminal rule the target alone decides;
    # None for popgate's own endpoints. Only the plan's other checks run per request, so a
    # flood on a few URLs skips every path and host check. Per compiled policy (a reload
    # starts empty), bounded: cleared when full.
    memo: dict[tuple[str, str, str], tuple[Rule, ...] | None] = field(
        default_factory=dict, compare=False, repr=False
    )

    def match(self, view: RequestView, klass: str, weight: int = 0, trace: Trace | None = None) -> Match:
        """Decide ``view`` for a client of class ``klass``.

        ``weight`` is extra suspicion from classification heuristics; it adds
        to what weigh rules contribute. ``trace``, when given, records the weigh
        rules that matched. Raises KeyError for an unknown class.
        """
        req = Req(view)
        if trace is not None:
            return self._match_traced(req, klass, weight, trace)
        key = (view.method, view.host, view.path)
        memo = self.memo
        try:
            plan = memo[key]
        except KeyError:
            plan = self._plan(req)
            if len(memo) >= MEMO_MAX:
                memo.clear()
            memo[key] = plan
        if plan is None:
            return _POPGATE
        for rule in plan:
            for check in rule.rest:
                if not check(req):
                    break
            else:
                if rule.results is None:
                    weight += rule.weight
                    continue
                return rule.results[klass]
        return self._fallback(klass, weight)

    def _plan(self, req: Req) -> tuple[Rule, ...] | None:
        """The rules a request to this target may match, in order (see ``memo``)."""
        npath = req.npath
        if npath.startswith(POPGATE_PREFIX) and (
            len(npath) == len(POPGATE_PREFIX) or npath[len(POPGATE_PREFIX)] == "/"
        ):
            return None
        plan = []
        for rule in self.rules:
            for check in rule.head:
                if not check(req):
                    break
            else:
                plan.append(rule)
                if not rule.rest and rule.results is not None:
                    break  # decided by the target: no later rule is ever tried
        return tuple(plan)

    def _match_traced(self, req: Req, klass: str, weight: int, trace: Trace) -> Match:
        """:meth:`match` rule by rule, recording the weigh rules that matched."""
        if self._plan(req) is None:
            return _POPGATE
        for rule in self.rules:
            if rule.matches(req):
                if rule.results is None:
                    weight += rule.weight
                    trace.weighed.append((rule.name, rule.weight))
                    continue
                return rule.results[klass]
        return self._fallback(klass, weight)

    def _fallback(self, klass: str, weight: int) -> Match:
        """No terminal rule matched: the highest threshold the weight reaches, else the default."""
        if weight > 0:
            for t in self.thresholds:
                if weight >= t.weight:
                    return t.results[klass]
        return self.default[klass]

    def target_decides(self, view: RequestView, klass: str) -> bool:
        """True when :meth:`match` (weight 0) reads nothing of ``view`` but its
        method, host and path: every rule it tries is settled by those alone.
        A forward-auth verdict keyed on them may then be reused by the edge."""
        req = Req(view)
        for rule in self.rules:
            hit = rule.target_decides(req)
            if hit is None or (hit and rule.results is None):
                return False  # a weigh rule's weight feeds the thresholds: not reusable
            if hit:
                return klass in rule.results if rule.results is not None else False
        return True
