"""Load, validate and compile a TOML policy (format: ``policies/README.md``).

:func:`load` / :func:`loads` return a compiled :class:`~policies.engine.Policy`
or raise :class:`PolicyError` listing *every* problem with its key path, e.g.
``rules[3].networks[1]: invalid CIDR '10.0.0.0/33'``. Nothing here runs per
request.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from popgate.policies.actions import Problems, parse_action
from popgate.policies.engine import Policy, Rule, Threshold
from popgate.policies.matchers import compile_checks
from popgate.policies.model import CLASSES, Action, Match

SNIPPETS = Path(__file__).parent / "snippets"
MAX_INCLUDE_DEPTH = 4
RULE_KEYS = {
    "name",
    "route",
    "host",
    "methods",
    "path",
    "path_regex",
    "path_form",
    "case_sensitive",
    "headers",
    "headers_absent",
    "user_agent",
    "networks",
    "declared_agent",
    "weight",
    "action",
    "actions",
    "description",
}
_NAME_RE = re.compile(r"[A-Za-z0-9_.:/*-]{1,64}\Z")


class PolicyError(Exception):
    """The policy is invalid; ``problems`` lists each with its key path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid policy:\n  " + "\n  ".join(problems))


def load(path: str | Path) -> Policy:
    """Read and compile a policy file. Raises PolicyError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError([f"{path}: cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError as exc:
        raise PolicyError([f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8"]) from None
    return loads(text, base_dir=path.parent, source=str(path))


def loads(text: str, *, base_dir: Path | None = None, source: str = "<string>") -> Policy:
    """Compile policy text. Raises PolicyError."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError([f"{source}: TOML syntax: {exc}"]) from None
    return compile_policy(data, base_dir=base_dir, source=source)


def compile_policy(data: dict[str, Any], *, base_dir: Path | None = None, source: str = "<memory>") -> Policy:
    """Validate a parsed policy table and compile it. Raises PolicyError."""
    p = Problems()
    p.unknown_keys("", data, {"version", "description", "default", "rules", "thresholds"})
    if data.get("version", 1) != 1:
        p.add("version", f"unsupported version {data.get('version')!r} (expected 1)")
    default = _default(p, data.get("default"))
    raw_rules = _expand(p, data.get("rules", []), "rules", base_dir, 0, set())
    rules: list[Rule] = []
    seen: dict[str, str] = {}
    for where, r in raw_rules:
        rule = _rule(p, where, r, default)
        if rule is None:
            continue
        if rule.name in seen:
            p.add(f"{where}.name", f"duplicate rule name {rule.name!r} (first at {seen[rule.name]})")
        seen.setdefault(rule.name, where)
        rules.append(rule)
    thresholds = _thresholds(p, data.get("thresholds", []), default)
    if p.items:
        raise PolicyError(p.items)
    dmatch = {k: Match(a, "default", "default") for k, a in default.items()}
    return Policy(tuple(rules), tuple(sorted(thresholds, key=lambda t: -t.weight)), dmatch, source)


def _default(p: Problems, value: Any) -> dict[str, Action]:
    if not isinstance(value, dict):
        p.add("default", "required table naming an action for every class (no implicit allow)")
        return {}
    acts = _per_class(p, "default", value)
    for k in CLASSES:
        if k not in acts and k not in value and "all" not in value:  # an invalid one is reported already
            p.add(f"default.{k}", "missing: every class needs an explicit default action")
    return acts


def _per_class(p: Problems, where: str, table: dict[str, Any]) -> dict[str, Action]:
    p.unknown_keys(where, table, {"all", *CLASSES})
    out: dict[str, Action] = {}
    if "all" in table:
        a = parse_action(p, f"{where}.all", table["all"])
        if a is not None:
            out = dict.fromkeys(CLASSES, a)
    for k in CLASSES:
        if k in table:
            a = parse_action(p, f"{where}.{k}", table[k])
            if a is not None:
                out[k] = a
    if "backed-agent" not in table and "verified-agent" in table and "verified-agent" in out:
        # a table written before backed agents existed treats them as verified agents
        out["backed-agent"] = out["verified-agent"]
    return out


def _expand(
    p: Problems, items: Any, where: str, base: Path | None, depth: int, stack: set[Path]
) -> list[tuple[str, dict[str, Any]]]:
    """Flatten ``rules`` with ``{include = "..."}`` entries into (path, table) pairs."""
    if not isinstance(items, list):
        p.add(where, "expected an array of tables ([[rules]])")
        return []
    out: list[tuple[str, dict[str, Any]]] = []
    for i, r in enumerate(items):
        here = f"{where}[{i}]"
        if not isinstance(r, dict):
            p.add(here, "expected a table")
        elif "include" in r:
            out.extend(_include(p, here, r, base, depth, stack))
        else:
            out.append((here, r))
    return out


def _include(
    p: Problems, here: str, r: dict[str, Any], base: Path | None, depth: int, stack: set[Path]
) -> list[tuple[str, dict[str, Any]]]:
    p.unknown_keys(here, r, {"include"})
    name = r["include"]
    if not isinstance(name, str) or not name or "\x00" in name:
        p.add(f"{here}.include", "expected a file name")
        return []
    if name.startswith("(snippets)/"):
        target = SNIPPETS / name.removeprefix("(snippets)/")
    else:
        target = (base or Path.cwd()) / name
    target = target.resolve()
    if depth >= MAX_INCLUDE_DEPTH or target in stack:
        p.add(f"{here}.include", f"include loop or nesting deeper than {MAX_INCLUDE_DEPTH}: {name}")
        return []
    try:
        data = tomllib.loads(target.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        p.add(f"{here}.include", f"cannot load {name}: {exc}")
        return []
    p.unknown_keys(f"{here}({name})", data, {"description", "rules"})
    return _expand(
        p, data.get("rules", []), f"{here}({name}).rules", target.parent, depth + 1, stack | {target}
    )


def _rule(p: Problems, where: str, r: dict[str, Any], default: dict[str, Action]) -> Rule | None:
    n0 = len(p.items)
    p.unknown_keys(where, r, RULE_KEYS)
    name = r.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        p.add(f"{where}.name", f"required: 1-64 chars of [A-Za-z0-9_.:/*-], got {name!r}")
        name = where
    route = r.get("route", name)
    if not isinstance(route, str) or not _NAME_RE.match(route):
        p.add(f"{where}.route", f"expected 1-64 chars of [A-Za-z0-9_.:/*-], got {route!r}")
        route = name
    checks, keyed = compile_checks(p, where, r)
    has_action = "action" in r or "actions" in r
    weight = r.get("weight")
    results: dict[str, Match] | None = None
    if weight is not None and has_action:
        p.add(where, "a rule either weighs (weight) or decides (action/actions), not both")
    elif weight is not None:
        if not isinstance(weight, int) or isinstance(weight, bool) or not 1 <= weight <= 1000:
            p.add(f"{where}.weight", f"expected an integer 1..1000, got {weight!r}")
    elif has_action:
        results = _results(p, where, r, default, name, route)
    else:
        p.add(where, "needs action, actions or weight")
    if len(p.items) > n0:
        return None
    return Rule(name, route, checks, weight or 0, results, keyed)


def _results(
    p: Problems, where: str, r: dict[str, Any], default: dict[str, Action], name: str, route: str
) -> dict[str, Match]:
    acts: dict[str, Action] = {}
    if "action" in r and "actions" in r:
        p.add(where, "give action (all classes) or actions (per class), not both")
    elif "action" in r:
        a = parse_action(p, f"{where}.action", r["action"])
        if a is not None:
            acts = dict.fromkeys(CLASSES, a)
    elif not isinstance(r["actions"], dict):
        p.add(f"{where}.actions", "expected a table of class = action")
    else:
        acts = _per_class(p, f"{where}.actions", r["actions"])
    return {
        k: Match(acts.get(k) or default.get(k) or Action("deny", status=403), name, route) for k in CLASSES
    }


def _thresholds(p: Problems, items: Any, default: dict[str, Action]) -> list[Threshold]:
    if not isinstance(items, list):
        p.add("thresholds", "expected an array of tables ([[thresholds]])")
        return []
    out = []
    for i, t in enumerate(items):
        where = f"thresholds[{i}]"
        if not isinstance(t, dict):
            p.add(where, "expected a table")
            continue
        p.unknown_keys(where, t, {"name", "weight", "action", "actions", "description"})
        name, w = t.get("name"), t.get("weight")
        if not isinstance(name, str) or not _NAME_RE.match(name):
            p.add(f"{where}.name", f"required: 1-64 chars of [A-Za-z0-9_.:/*-], got {name!r}")
            name = where
        if not isinstance(w, int) or isinstance(w, bool) or w < 1:
            p.add(f"{where}.weight", f"expected an integer >= 1, got {w!r}")
            w = 1
        if "action" not in t and "actions" not in t:
            p.add(where, "needs action or actions")
            continue
        out.append(Threshold(name, w, _results(p, where, t, default, name, "threshold")))
    return out
