"""``[worldid_api]``: the dApp verify API's apps and actions, validated with the rest of the config.

```toml
[worldid_api]                        # needs [worldid] (its key, roots and proof pool)
path = "/.well-known/popgate/api/v2/verify/"   # + app_id; "/api/v2/verify/" mirrors the Portal's
                                     # paths exactly (popgate then answers them, not the origin)
admin_token = { secret_file = "/run/secrets/worldid-api-admin" }  # GET /admin/worldid/verifications
gate_rate = 60                       # proofs per client network per gate_window (before any pairing)
gate_window = 60
[[worldid_api.apps]]
app_id = "app_0123..."
[[worldid_api.apps.actions]]
action = "vote"                      # "" is the sign-in action
max_verifications = 1                # per person (nullifier); 0 = unlimited
verification_levels = ["orb"]        # empty: any level
```
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from popgate.gateway.ops.validation import Collector, read_secret

KEYS = {"admin_token", "gate_rate", "gate_window", "apps", "path"}
DEFAULT_PATH = "/.well-known/popgate/api/v2/verify/"
PATH = re.compile(r"/(?:[A-Za-z0-9._~-]+/)+")
APP_KEYS = {"app_id", "actions"}
ACTION_KEYS = {"action", "max_verifications", "verification_levels"}
APP_ID = re.compile(r"app_[A-Za-z0-9_]{1,64}")
LEVELS = ("orb", "secure_document", "document", "device", "face")


@dataclass(frozen=True, slots=True)
class ActionSettings:
    action: str
    max_verifications: int = 1  # 0: unlimited
    verification_levels: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class AppSettings:
    app_id: str
    actions: dict[str, ActionSettings]


@dataclass(frozen=True, slots=True)
class WorldIdApiSettings:
    apps: dict[str, AppSettings]
    admin_token: bytes | None = None
    gate_rate: int = 60
    gate_window: float = 60.0
    path: str = DEFAULT_PATH


def _action(c: Collector, path: str, t: Any) -> ActionSettings | None:
    if not isinstance(t, dict):
        c.problem(path, "expected a table")
        return None
    c.unknown_keys(path, t, ACTION_KEYS)
    name = t.get("action")
    if not isinstance(name, str) or len(name) > 256:
        c.problem(f"{path}.action", 'required: the action string ("" for sign-in)')
        return None
    limit = c.number(f"{path}.max_verifications", t.get("max_verifications", 1), lo=0, hi=10**6, integer=True)
    levels = t.get("verification_levels", [])
    if not isinstance(levels, list) or not all(x in LEVELS for x in levels):
        c.problem(f"{path}.verification_levels", f"expected a list of {', '.join(LEVELS)}")
        levels = []
    return ActionSettings(name, int(limit if limit is not None else 1), frozenset(levels))


def _app(c: Collector, path: str, t: Any) -> AppSettings | None:
    if not isinstance(t, dict):
        c.problem(path, "expected a table")
        return None
    c.unknown_keys(path, t, APP_KEYS)
    app_id = t.get("app_id")
    if not isinstance(app_id, str) or not APP_ID.fullmatch(app_id):
        c.problem(f"{path}.app_id", "required: an app id, app_ followed by letters, digits and _")
        app_id = None
    raw = t.get("actions")
    if not isinstance(raw, list) or not raw:
        c.problem(f"{path}.actions", "at least one [[worldid_api.apps.actions]] table is required")
        raw = []
    actions: dict[str, ActionSettings] = {}
    for i, a in enumerate(raw):
        got = _action(c, f"{path}.actions[{i}]", a)
        if got is not None and got.action in actions:
            c.problem(f"{path}.actions[{i}].action", f"action {got.action!r} is listed twice")
        elif got is not None:
            actions[got.action] = got
    return AppSettings(app_id, actions) if app_id is not None else None


def _admin_token(c: Collector, t: dict[str, Any], env: Any) -> bytes | None:
    if "admin_token" not in t:
        return None
    if not isinstance(t["admin_token"], dict):
        c.problem("worldid_api.admin_token", "expected a table with secret_file or secret_env")
        return None
    return read_secret(c, "worldid_api.admin_token", t["admin_token"], env)


def collect_settings(c: Collector, t: Any, env: Any, has_worldid: bool) -> WorldIdApiSettings | None:
    """Validate ``[worldid_api]``, recording every problem in ``c``; None when there were any."""
    before = len(c.problems)
    if not isinstance(t, dict):
        c.problem("worldid_api", "expected a table")
        return None
    c.unknown_keys("worldid_api", t, KEYS)
    if not has_worldid:
        c.problem("worldid_api", "needs [worldid] (its verification key, [worldid.roots] and proof pool)")
    token = _admin_token(c, t, env)
    path = t.get("path", DEFAULT_PATH)
    if not isinstance(path, str) or not PATH.fullmatch(path) or "/../" in path or "/./" in path:
        c.problem("worldid_api.path", 'expected an absolute path ending in "/", e.g. "/api/v2/verify/"')
    rate = c.number("worldid_api.gate_rate", t.get("gate_rate", 60), lo=1, hi=10**9, integer=True)
    window = c.number("worldid_api.gate_window", t.get("gate_window", 60), lo=0.001, hi=86400)
    apps: dict[str, AppSettings] = {}
    raw = t.get("apps")
    if not isinstance(raw, list) or not raw:
        c.problem("worldid_api.apps", "at least one [[worldid_api.apps]] table is required")
        raw = []
    for i, a in enumerate(raw):
        app = _app(c, f"worldid_api.apps[{i}]", a)
        if app is not None and app.app_id in apps:
            c.problem(f"worldid_api.apps[{i}].app_id", f"app {app.app_id} is listed twice")
        elif app is not None:
            apps[app.app_id] = app
    if len(c.problems) > before:
        return None
    return WorldIdApiSettings(apps, token, int(rate or 60), float(window or 60), str(path))
