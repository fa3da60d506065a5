"""``popgate check --config F``: validate the configuration and the policy, then
print per route and class what is allowed and which ways out are offered.

It reads the same validated config and compiled policy the gateway runs
(:func:`gateway.cli.startup.configure`) and the same list of actions the
dead-end check walks (:func:`gateway.ops.deadends.actions`); nothing here decides anew.
"""

from __future__ import annotations

from collections.abc import Iterable

from popgate.gateway.ops.config import Config
from popgate.gateway.ops.deadends import (
    CLASS_SOURCES,
    WAY_TABLES,
    Place,
    actions,
    offered_ways,
    reachable_classes,
    ways_for,
)
from popgate.policies.model import ATOMIC_PER_USD, WAYS, Action


def usd(atomic: int) -> str:
    """Atomic units (6 decimals) as a USD amount without trailing zeros."""
    whole, frac = divmod(atomic, ATOMIC_PER_USD)
    return f"{whole}.{frac:06d}".rstrip("0").rstrip(".") + " USD"


def describe(action: Action, offered: tuple[str, ...]) -> str:
    """One action in words, with the ways out this configuration offers for it."""
    kind = action.kind
    if kind == "allow":
        return "allow"
    if kind == "deny":
        return f"deny ({action.status or 403})"
    if kind == "throttle":
        r = action.rate
        return "throttle" if r is None else f"throttle {r.count}/{r.period:g}s burst {r.burst} per {r.per}"
    text = f"charge {usd(action.price)}" if kind == "charge" else "challenge"
    if kind == "challenge" and action.min_bits:
        text += f", puzzles from {action.min_bits} bits"
    if kind == "challenge" and action.price:
        text += f", price {usd(action.price)}"
    ways = ways_for(action, offered)
    off = [w for w in action.ways if w not in ways]
    text += f" -> ways out: {', '.join(ways) or 'NONE'}"
    return text + (f" (not configured: {', '.join(off)})" if off else "")


def report(config: Config, warnings: Iterable[str], source: str) -> list[str]:
    """The lines ``popgate check`` prints."""
    offered = offered_ways(config)
    reachable = reachable_classes(config)
    policy = config.features.policy
    lines = [f"{source}: valid"]
    lines.append(
        f"policy: {policy.source} ({len(policy.rules)} rules, {len(policy.thresholds)} thresholds)"
        if policy is not None
        else "policy: one action per class ([policy] table, no file)"
    )
    missing = [f"{w} ({' or '.join(WAY_TABLES[w])})" for w in WAYS if w not in offered]
    lines.append(f"ways out configured: {', '.join(offered) or 'none'}")
    if missing:
        lines.append(f"ways out not configured: {', '.join(missing)}")
    absent = [f"{k} (needs [{CLASS_SOURCES[k]}])" for k in CLASS_SOURCES if k not in reachable]
    lines.append(f"classes that can occur: {', '.join(reachable)}")
    if absent:
        lines.append(f"classes that cannot occur: {', '.join(absent)}")
    if policy is not None:
        lines.extend(f"weigh rule {r.name!r}: +{r.weight}" for r in policy.rules if r.results is None)
        lines.extend(f"threshold {t.name!r}: from weight {t.weight}" for t in policy.thresholds)
    lines.extend(_listing(config, offered, reachable))
    lines.extend(f"warning: {w}" for w in warnings)
    return lines


def _listing(config: Config, offered: tuple[str, ...], reachable: tuple[str, ...]) -> list[str]:
    places: dict[Place, dict[str, Action]] = {}
    for place, klass, action in actions(config):
        places.setdefault(place, {})[klass] = action
    out: list[str] = []
    for place, named in places.items():
        out.append(f"{place.label} (route {place.route}):")
        for klass in reachable:
            if klass in named:
                out.append(f"  {klass:<15} {describe(named[klass], offered)}")
            else:
                out.append(f"  {klass:<15} as the default")
    return out
