"""Which ways out a configuration offers, and the challenges that would offer none.

A challenge (or a charge) whose accepted ways are all switched off answers a
402 with ``ways_out: []``: nobody of that class can get in, and nothing says
why. :func:`dead_ends` finds each one before the gateway starts, naming the
rule, the class and the table to add; a challenge the operator wrote with
``ways = []`` on purpose is a warning instead. ``popgate run`` refuses to
start on an error, ``popgate check`` prints the same lines.

A class counts only where it can occur: ``human`` needs ``[worldid]``,
``account`` needs ``[zklogin]``, ``verified-agent`` needs ``[webbotauth]``;
``agent`` (declared bots) and ``unknown`` always can.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from popgate.gateway.ops.config import Config
from popgate.policies.engine import Policy
from popgate.policies.model import CLASSES, WAYS, Action

# way -> the tables that turn it on (any one of them)
WAY_TABLES: dict[str, tuple[str, ...]] = {
    "prove": ("[worldid]", "[zklogin]", "[privatepass]"),
    "puzzle": ("[puzzle]",),
    "hashcash": ("[puzzle] with hashcash = true",),
    "pay": ("[x402]",),
    "credits": ("[credits]",),
}
# The tables that can give a class ([crawlers] is on unless disabled).
CLASS_SOURCES: dict[str, str] = {
    "human": "worldid] or [privatepass",
    "account": "zklogin",
    "backed-agent": "delegation",
    "verified-agent": "webbotauth] or [crawlers",
}


@dataclass(frozen=True, slots=True)
class Place:
    """Where an action is written: ``label`` (``rule 'x'``, ``threshold 'x'``, ``default``),
    its ``route``, and the policy file it is in (none for the core ``[policy]`` table)."""

    label: str
    route: str
    source: str = ""

    @property
    def where(self) -> str:
        return f"{self.source} {self.label}" if self.source else self.label


def offered_ways(config: Config) -> tuple[str, ...]:
    """The ways out this configuration can offer, in the policy's order."""
    f = config.features
    on = {
        "prove": f.worldid is not None or f.zklogin is not None or f.privatepass is not None,
        "puzzle": config.puzzle is not None,
        "hashcash": config.puzzle is not None and config.puzzle.hashcash,
        "pay": f.x402 is not None,
        "credits": f.credits is not None,
    }
    return tuple(w for w in WAYS if on[w])


def reachable_classes(config: Config) -> tuple[str, ...]:
    """The classes a client can be given under this configuration."""
    f = config.features
    given = {
        "human": f.worldid is not None or f.privatepass is not None,
        "account": f.zklogin is not None,
        "backed-agent": f.delegation is not None,
        "verified-agent": f.webbotauth is not None or f.crawlers is not None,
    }
    return tuple(k for k in CLASSES if given.get(k, True))


def core_action(name: str) -> Action:
    """The action of the core per-class policy (no ``[policy] file``): as the gateway applies it."""
    if name == "challenge":
        return Action("challenge", ways=WAYS)
    return Action("deny", status=403) if name == "deny" else Action("allow")


def actions(config: Config) -> Iterator[tuple[Place, str, Action]]:
    """Every (place, class, action) the policy can apply, each written action once.

    A rule's entry for a class it does not name is the default's: listed once, under the default.
    """
    policy = config.features.policy
    if policy is None:
        core = Place("[policy]", "default")
        for klass, name in config.policy.actions.items():
            yield core, klass, core_action(name)
        return
    defaults = {k: m.action for k, m in policy.default.items()}
    for rule in policy.rules:
        if rule.results is None:
            continue
        place = Place(f"rule {rule.name!r}", rule.route, policy.source)
        for klass, m in rule.results.items():
            if m.action is not defaults[klass]:
                yield place, klass, m.action
    for t in policy.thresholds:
        place = Place(f"threshold {t.name!r}", "threshold", policy.source)
        for klass, m in t.results.items():
            if m.action is not defaults[klass]:
                yield place, klass, m.action
    default = Place("[default]", "default", policy.source)
    for klass, action in defaults.items():
        yield default, klass, action


def ways_for(action: Action, offered: tuple[str, ...]) -> tuple[str, ...]:
    """The ways out ``action`` offers under a configuration offering ``offered``."""
    if action.kind not in ("challenge", "charge"):
        return ()
    return tuple(w for w in action.ways if w in offered)


def with_policy(config: Config, policy: Policy) -> Config:
    """``config`` with another compiled policy file (a SIGHUP reload is checked as at start-up)."""
    return replace(config, features=replace(config.features, policy=policy))


def dead_ends(config: Config) -> tuple[list[str], list[str]]:
    """(errors, warnings): challenges and charges that offer some reachable class no way out."""
    offered = offered_ways(config)
    reachable = reachable_classes(config)
    found: dict[tuple[str, str, Action], list[str]] = {}
    for place, klass, action in actions(config):
        if klass in reachable and action.kind in ("challenge", "charge") and not ways_for(action, offered):
            found.setdefault((place.where, action.kind, action), []).append(klass)
    errors, warnings = [], []
    for (where, kind, action), classes in found.items():
        who = f"class {classes[0]}" if len(classes) == 1 else f"classes {', '.join(classes)}"
        verb = "challenged" if kind == "challenge" else "charged"
        if not action.ways:
            warnings.append(f"{where}: {who} {verb} with ways = [] (on purpose?): a 402 with no way out")
            continue
        need = " or ".join(dict.fromkeys(t for w in action.ways for t in WAY_TABLES[w]))
        errors.append(
            f"{where}: {who} {verb} with no way out: ways {', '.join(action.ways)} need {need} "
            f"(none configured); add one, or change the action"
        )
    return errors, warnings
