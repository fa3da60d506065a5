"""The ``[webbotauth]`` table: validated into :class:`WebBotAuthSettings`
by the config loader (:func:`collect_settings`, one pass with every other
table); :mod:`gateway.schemes.webbotauth` builds the scheme from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from popgate.gateway.ops import validation as pc
from popgate.gateway.ops.validation import ConfigError
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.webbotauth import StaticKey, agent_origin, static_keys_from_jwks

_NUMBERS = {
    "signature_window": (300, 1, 86400),
    "clock_skew": (30, 0, 600),
    "directory_ttl": (3600, 1, 7 * 86400),
    "directory_min_ttl": (60, 0, 86400),
    "directory_failure_ttl": (60, 1, 86400),
    "max_agents": (1024, 1, 10**6),
}
_BOOLS = {"allow_any_agent": False, "allow_http_directories": False, "require_nonce": False}


@dataclass(frozen=True)
class WebBotAuthSettings:
    static: dict[str, StaticKey]
    directories: frozenset[str]
    numbers: dict[str, int]
    allow_any_agent: bool
    allow_http_directories: bool
    require_nonce: bool


def parse_settings(raw: Any) -> WebBotAuthSettings:
    """Validate ``[webbotauth]``; raise ConfigError with every problem."""
    problems: list[str] = []
    settings = collect_settings(pc.Collector({}, problems), raw)
    if settings is None:
        raise ConfigError(problems)
    return settings


def collect_settings(c: pc.Collector, raw: Any) -> WebBotAuthSettings | None:
    """Validate ``[webbotauth]``, recording every problem in ``c``; None when there were any."""
    before = len(c.problems)
    t = c.table("webbotauth", {"webbotauth": raw})
    c.unknown_keys("webbotauth", t, {"keys", "directories", *_NUMBERS, *_BOOLS})
    nums: dict[str, int] = {}
    for name, (default, lo, hi) in _NUMBERS.items():
        v = c.number(f"webbotauth.{name}", t.get(name, default), lo=lo, hi=hi, integer=True)
        nums[name] = int(v) if v is not None else default
    bools: dict[str, bool] = {}
    for name, default in _BOOLS.items():
        bools[name] = t.get(name, default)
        if not isinstance(bools[name], bool):
            c.problem(f"webbotauth.{name}", f"expected true or false, got {bools[name]!r}")
            bools[name] = default
    static: dict[str, StaticKey] = {}
    keys = t.get("keys", [])
    if not isinstance(keys, list):
        c.problem("webbotauth.keys", "expected a list of tables")
        keys = []
    for i, k in enumerate(keys):
        path = f"webbotauth.keys[{i}]"
        if not isinstance(k, dict):
            c.problem(path, "expected a table with jwk or jwks_file")
            continue
        c.unknown_keys(path, k, {"jwk", "jwks_file", "operator"})
        op = k.get("operator")
        if op is not None and not (isinstance(op, str) and op):
            c.problem(f"{path}.operator", "expected a non-empty string")
            op = None
        try:
            if ("jwk" in k) == ("jwks_file" in k):
                c.problem(path, "give exactly one of jwk, jwks_file")
                continue
            jwks = (
                {"keys": [k["jwk"]]}
                if "jwk" in k
                else json.loads(Path(str(k["jwks_file"])).read_text(encoding="utf-8"))
            )
            found = static_keys_from_jwks(jwks, op)
        except (OSError, ValueError, Malformed) as exc:
            c.problem(path, f"unusable key: {exc}")
            continue
        if not found:
            c.problem(path, "no Ed25519/EC key found")
        static.update(found)
    dirs = t.get("directories", [])
    origins = set()
    if not isinstance(dirs, list):
        c.problem("webbotauth.directories", "expected a list of agent origins")
        dirs = []
    for i, d in enumerate(dirs):
        try:
            origins.add(agent_origin(str(d), allow_insecure=bools["allow_http_directories"]))
        except VerificationError:
            c.problem(
                f"webbotauth.directories[{i}]",
                f"not an https origin: {d!r} (allow_http_directories = true for tests)",
            )
    if not static and not origins and not bools["allow_any_agent"]:
        c.problem(
            "webbotauth", "no keys, no directories and allow_any_agent = false: nothing could ever verify"
        )
    if len(c.problems) > before:
        return None
    return WebBotAuthSettings(static, frozenset(origins), nums, **bools)
