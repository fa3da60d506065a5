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

from popgate.gateway.http.forward_auth_config import ForwardAuthSettings
from popgate.gateway.http.forward_auth_config import collect_settings as forward_auth_settings
from popgate.gateway.http.shedding import OverloadConfig, collect_overload
from popgate.gateway.ops import logs, tracing
from popgate.gateway.ops.logs import LogSettings
from popgate.gateway.ops.tracing import TracingSettings
from popgate.gateway.ops.validation import Collector
from popgate.gateway.payments.settings import CreditsSettings, X402Settings, parse_credits, parse_x402
from popgate.gateway.pipeline import page_settings
from popgate.gateway.pipeline.page_settings import PageSettings
from popgate.gateway.pipeline.pressure import collect_difficulty
from popgate.gateway.schemes import (
    crawlers_config,
    delegation_config,
    privatepass_config,
    webbotauth_config,
    worldid_api_config,
    worldid_config,
    zklogin_config,
)
from popgate.gateway.schemes.crawlers_config import CrawlerSettings
from popgate.gateway.schemes.delegation_config import DelegationSettings
from popgate.gateway.schemes.privatepass_config import PrivatePassSettings
from popgate.gateway.schemes.webbotauth_config import WebBotAuthSettings
from popgate.gateway.schemes.worldid_api_config import WorldIdApiSettings
from popgate.gateway.schemes.worldid_config import WorldIdSettings
from popgate.gateway.schemes.zklogin_config import ZkLoginSettings
from popgate.policies.difficulty import DifficultyConfig
from popgate.policies.engine import Policy
from popgate.policies.loader import PolicyError, load

SECTIONS = frozenset(
    {
        "worldid",
        "worldid_api",
        "zklogin",
        "webbotauth",
        "puzzle",
        "x402",
        "credits",
        "difficulty",
        "privatepass",
        "delegation",
        "forward_auth",
        "page",
        "crawlers",
        "log",
        "tracing",
        "overload",
    }
)


@dataclass(frozen=True, slots=True)
class Features:
    """Typed settings per feature table (None: the table is absent)."""

    difficulty: DifficultyConfig = field(default_factory=DifficultyConfig)
    overload: OverloadConfig = field(default_factory=OverloadConfig)
    policy: Policy | None = None  # the compiled ``[policy] file``
    worldid: WorldIdSettings | None = None
    worldid_api: WorldIdApiSettings | None = None
    zklogin: ZkLoginSettings | None = None
    webbotauth: WebBotAuthSettings | None = None
    x402: X402Settings | None = None
    credits: CreditsSettings | None = None
    privatepass: PrivatePassSettings | None = None
    delegation: DelegationSettings | None = None
    forward_auth: ForwardAuthSettings = field(default_factory=ForwardAuthSettings)
    page: PageSettings = field(default_factory=PageSettings)  # challenge-page branding
    crawlers: CrawlerSettings | None = None  # on unless [crawlers] enabled = false
    log: LogSettings = field(default_factory=LogSettings)
    tracing: TracingSettings | None = None


def collect_features(c: Collector, data: dict[str, Any], env: Any, store_url: str) -> Features:
    """Validate every feature table in ``data``, recording problems in ``c``."""
    difficulty = collect_difficulty(c, data.get("difficulty"))
    policy = _policy_file(c, data)
    overload = collect_overload(c, data.get("overload"))
    return Features(
        difficulty=difficulty or DifficultyConfig(),
        overload=overload or OverloadConfig(),
        policy=policy,
        worldid=worldid_config.collect_settings(c, data["worldid"], store_url, env)
        if "worldid" in data
        else None,
        worldid_api=_worldid_api(c, data, env),
        zklogin=zklogin_config.collect_settings(c, data["zklogin"], env) if "zklogin" in data else None,
        webbotauth=webbotauth_config.collect_settings(c, data["webbotauth"])
        if "webbotauth" in data
        else None,
        x402=parse_x402(c, c.table("x402"), _routes(policy)) if "x402" in data else None,
        credits=parse_credits(c, c.table("credits"), env) if "credits" in data else None,
        privatepass=privatepass_config.collect_settings(c, data["privatepass"])
        if "privatepass" in data
        else None,
        delegation=delegation_config.collect_settings(c, data["delegation"])
        if "delegation" in data
        else None,
        forward_auth=forward_auth_settings(c, c.table("forward_auth"), _routes(policy)),
        page=page_settings.collect_settings(c, c.table("page")),
        crawlers=crawlers_config.collect_settings(c, data.get("crawlers")),
        log=logs.collect_settings(c, data.get("log")),
        tracing=tracing.collect_settings(c, data["tracing"]) if "tracing" in data else None,
    )


def _routes(policy: Policy | None) -> frozenset[str] | None:
    """Every route the compiled policy can decide with (None: no policy file to check against)."""
    if policy is None:
        return None
    matches = [*policy.default.values(), *(m for t in policy.thresholds for m in t.results.values())]
    matches += [m for r in policy.rules if r.results for m in r.results.values()]
    return frozenset(m.route for m in matches)


def _worldid_api(c: Collector, data: dict[str, Any], env: Any) -> WorldIdApiSettings | None:
    if "worldid_api" not in data:
        return None
    return worldid_api_config.collect_settings(c, data["worldid_api"], env, "worldid" in data)


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
