"""The feature tables, validated with the rest of the config in one pass.

:func:`collect_features` is called by :func:`gateway.ops.config.build_config`
with the same :class:`~gateway.ops.validation.Collector` as the core tables,
so one run reports every problem in every table with its key path. The
result, :class:`Features` (``config.features``), holds the typed settings the
extensions build from; an absent table is None (that feature is off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from popgate.gateway.http.shedding import OverloadConfig, collect_overload
from popgate.gateway.ops.validation import Collector
from popgate.gateway.payments.settings import CreditsSettings, X402Settings, parse_credits, parse_x402
from popgate.gateway.pipeline.pressure import collect_difficulty
from popgate.gateway.schemes import webbotauth_config, worldid_config, zklogin_config
from popgate.gateway.schemes.webbotauth_config import WebBotAuthSettings
from popgate.gateway.schemes.worldid_config import WorldIdSettings
from popgate.gateway.schemes.zklogin_config import ZkLoginSettings
from popgate.policies.difficulty import DifficultyConfig
from popgate.policies.engine import Policy
from popgate.policies.loader import PolicyError, load

SECTIONS = frozenset(
    {"worldid", "zklogin", "webbotauth", "puzzle", "x402", "credits", "difficulty", "overload"}
)


@dataclass(frozen=True, slots=True)
class Features:
    """Typed settings per feature table (None: the table is absent)."""

    difficulty: DifficultyConfig = field(default_factory=DifficultyConfig)
    overload: OverloadConfig = field(default_factory=OverloadConfig)
    policy: Policy | None = None  # the compiled ``[policy] file``
    worldid: WorldIdSettings | None = None
    zklogin: ZkLoginSettings | None = None
    webbotauth: WebBotAuthSettings | None = None
    x402: X402Settings | None = None
    credits: CreditsSettings | None = None


def collect_features(c: Collector, data: dict[str, Any], env: Any, store_url: str) -> Features:
    """Validate every feature table in ``data``, recording problems in ``c``."""
    difficulty = collect_difficulty(c, data.get("difficulty"))
    overload = collect_overload(c, data.get("overload"))
    return Features(
        difficulty=difficulty or DifficultyConfig(),
        overload=overload or OverloadConfig(),
        policy=_policy_file(c, data),
        worldid=worldid_config.collect_settings(c, data["worldid"], store_url) if "worldid" in data else None,
        zklogin=zklogin_config.collect_settings(c, data["zklogin"], env) if "zklogin" in data else None,
        webbotauth=webbotauth_config.collect_settings(c, data["webbotauth"])
        if "webbotauth" in data
        else None,
        x402=parse_x402(c, c.table("x402")) if "x402" in data else None,
        credits=parse_credits(c, c.table("credits"), env) if "credits" in data else None,
    )


def _policy_file(c: Collector, data: dict[str, Any]) -> Policy | None:
    """Compile ``[policy] file`` (a missing file is reported by the core checks)."""
    table = data.get("policy")
    file = table.get("file") if isinstance(table, dict) else None
    if file is None or not Path(str(file)).is_file():
        return None
    try:
        return load(str(file))
    except PolicyError as exc:
        for p in exc.problems:
            c.problem("policy.file", p)
        return None
