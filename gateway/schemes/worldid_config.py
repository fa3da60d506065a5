"""``[worldid]``: validated once at start-up, every problem with its key path.

[worldid]
app_id = "app_..."                  # required
action = "verify-human"             # the base action ("" = sign-in)
rotate = "none"                     # | "daily" | "weekly": action + "/d<n>" | "/w<n>"
signal = "empty"                    # | "client": the body's "signal" is what was proved
key = "worldid_v3"                  # bundled key name ("semaphore_v3:20"), or:
vk_file = "/etc/popgate/vk.json"    # a snarkjs verification_key.json
depth = 30                          # with key = "semaphore_v3" / "semaphore_v4"
verification_levels = []            # allowed levels (empty: any)
sessions_per_nullifier = 1          # sessions one person may open per action (period)
session_ttl = 3600
workers = 1                         # verification processes
queue_limit = 32                    # jobs waiting beyond the workers, then 503
cache_size = 4096                   # verdict LRU
gate_rate = 20                      # pool jobs per client network per gate_window
gate_window = 60
cloud_verify_url = "https://developer.worldcoin.org/api/v4/verify/app_..."  # 4.0 results
cloud_timeout = 10
legacy = true                       # IDKit 4: accept 3.0 (legacy) results too (allow_legacy_proofs)
expiry_threshold = 18000            # 4.0: credential expires_at_min + this >= now (the contract's)
issuer_schema_ids = []              # 4.0: allowed credentials (1 = proof_of_human; empty: any)
v4_vk_file = "/etc/popgate/v4.json" # 4.0 key (snarkjs JSON, 15 inputs); default: the bundled production key

[worldid.roots]
source = "static"                   # | "file" | "redis" | "rpc"
roots = ["0x..."]                   # static
file = "/var/lib/popgate/roots"     # file: one root per line (hex or decimal), # comments
redis_key = "popgate:worldid:roots" # redis: a set of roots (the store must be Redis)
rpc_url = "http://127.0.0.1:8545"   # rpc: eth_call on the identity manager / bridge
contract = "0x..."
poll_interval = 60                  # file mtime / redis / rpc refresh period, seconds
root_expiry = 3600                  # rpc: seconds a superseded root stays valid
                                    #      (default: the contract's rootHistoryExpiry())
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from popgate.gateway.ops.validation import Collector, ConfigError, read_vk_file
from popgate.gateway.schemes.worldid4_config import ChainSettings, RpSettings, collect_chain, collect_rp
from popgate.gateway.stores.redis_urls import REDIS_SCHEMES
from popgate.verifiers.bn254.encoding import parse_uint
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.worldid import key_spec

ROTATIONS = {"none": 0, "daily": 86400, "weekly": 7 * 86400}
SOURCES = ("static", "file", "redis", "rpc")
KEYS = {
    "app_id",
    "action",
    "rotate",
    "signal",
    "key",
    "vk_file",
    "depth",
    "verification_levels",
    "sessions_per_nullifier",
    "session_ttl",
    "workers",
    "queue_limit",
    "cache_size",
    "gate_rate",
    "gate_window",
    "cloud_verify_url",
    "cloud_timeout",
    "roots",
    "rp",
    "chain",
    "legacy",
    "expiry_threshold",
    "issuer_schema_ids",
    "v4_vk_file",
}
ROOT_KEYS = {"source", "roots", "file", "redis_key", "rpc_url", "contract", "poll_interval", "root_expiry"}


@dataclass(frozen=True, slots=True)
class RootsSettings:
    source: str = "static"
    roots: frozenset[int] = frozenset()
    file: str = ""
    redis_key: str = "popgate:worldid:roots"
    rpc_url: str = ""
    contract: str = ""
    poll_interval: float = 60.0
    root_expiry: float | None = None


@dataclass(frozen=True, slots=True)
class WorldIdSettings:
    app_id: str
    action: str
    vk_json: Any
    roots: RootsSettings
    rotate: str = "none"
    signal: str = "empty"
    verification_levels: frozenset[str] = frozenset()
    sessions_per_nullifier: int = 1
    session_ttl: int = 3600
    workers: int = 1
    queue_limit: int = 32
    cache_size: int = 4096
    gate_rate: int = 20
    gate_window: float = 60.0
    cloud_verify_url: str = ""
    cloud_timeout: float = 10.0
    rp: RpSettings | None = None
    chain: ChainSettings | None = None
    legacy: bool = True
    expiry_threshold: float = 18000.0
    issuer_schema_ids: frozenset[int] = frozenset()
    v4_vk_json: Any = None  # None: the bundled 4.0 production key

    @property
    def period(self) -> int:
        """Seconds per action period (0: the action does not rotate)."""
        return ROTATIONS[self.rotate]


def _str(c: Collector, t: dict[str, Any], name: str, default: str, path: str = "worldid") -> str:
    v = t.get(name, default)
    if not isinstance(v, str):
        c.problem(f"{path}.{name}", f"expected a string, got {v!r}")
        return default
    return v


def _num(
    c: Collector,
    t: dict[str, Any],
    name: str,
    default: float,
    lo: float,
    hi: float,
    integer: bool = True,
    path: str = "worldid",
) -> Any:
    v = c.number(f"{path}.{name}", t.get(name, default), lo=lo, hi=hi, integer=integer)
    return default if v is None else v


def _choice(
    c: Collector, t: dict[str, Any], name: str, choices: Any, default: str, path: str = "worldid"
) -> str:
    v = t.get(name, default)
    if v not in choices:
        c.problem(f"{path}.{name}", f"expected one of {', '.join(choices)}, got {v!r}")
        return default
    return str(v)


def _vk(c: Collector, t: dict[str, Any]) -> Any:
    if "vk_file" in t and "key" in t:
        c.problem("worldid.vk_file", "give either key or vk_file, not both")
    if "vk_file" in t:
        return read_vk_file(c, "worldid.vk_file", _str(c, t, "vk_file", ""))
    spec = _str(c, t, "key", "worldid_v3")
    if "depth" in t:
        depth = c.number("worldid.depth", t["depth"], lo=1, hi=32, integer=True)
        if depth is not None and ":" not in spec:
            spec = f"{spec}:{depth}"
    try:
        return key_spec(spec)
    except VerificationError as exc:
        c.problem("worldid.key", exc.detail)
        return None


def _roots(c: Collector, t: dict[str, Any], store_url: str) -> RootsSettings:
    c.unknown_keys("worldid.roots", t, ROOT_KEYS)
    p = "worldid.roots"
    source = _choice(c, t, "source", SOURCES, "static", p)
    roots: set[int] = set()
    raw = t.get("roots", [])
    if not isinstance(raw, list):
        c.problem(f"{p}.roots", "expected a list of roots (hex or decimal strings)")
        raw = []
    for i, r in enumerate(raw):
        try:
            roots.add(parse_uint(r, "root"))
        except VerificationError:
            c.problem(f"{p}.roots[{i}]", f"not a uint256: {r!r}")
    interval = float(_num(c, t, "poll_interval", 60, 0.05, 86400, integer=False, path=p))
    expiry = t.get("root_expiry")
    if expiry is not None:
        expiry = c.number(f"{p}.root_expiry", expiry, lo=0, hi=365 * 86400)
    s = RootsSettings(
        source,
        frozenset(roots),
        _str(c, t, "file", "", p),
        _str(c, t, "redis_key", "popgate:worldid:roots", p),
        _str(c, t, "rpc_url", "", p),
        _str(c, t, "contract", "", p),
        interval,
        None if expiry is None else float(expiry),
    )
    if source == "static" and not roots:
        c.problem(f"{p}.roots", "a static source needs at least one root")
    if source == "file" and not s.file:
        c.problem(f"{p}.file", 'required for source = "file"')
    if source == "redis" and not store_url.startswith(REDIS_SCHEMES):
        c.problem(
            f"{p}.source",
            '"redis" needs store.url = redis://..., redis+cluster://... or redis+sentinel://...',
        )
    if source == "rpc":
        if not re.match(r"^https?://", s.rpc_url):
            c.problem(f"{p}.rpc_url", f"expected an http(s) URL, got {s.rpc_url!r}")
        if not re.fullmatch(r"0x[0-9a-fA-F]{40}", s.contract):
            c.problem(f"{p}.contract", f"expected a 0x-address, got {s.contract!r}")
    return s


def parse_settings(t: Any, store_url: str, env: Any = None) -> WorldIdSettings:
    """Validate ``[worldid]``; raise ConfigError listing every problem."""
    problems: list[str] = []
    settings = collect_settings(Collector({}, problems), t, store_url, env)
    if settings is None:
        raise ConfigError(problems)
    return settings


def _v4(c: Collector, t: dict[str, Any], env: Any) -> dict[str, Any]:
    """The IDKit 4 / 4.0 part of ``[worldid]`` (``rp``, ``chain``, ``legacy``...)."""
    rp = collect_rp(c, c.table("rp", t), env if env is not None else os.environ) if "rp" in t else None
    chain = collect_chain(c, c.table("chain", t)) if "chain" in t else None
    if chain is not None and "rp" not in t:
        c.problem("worldid.chain", "local 4.0 verification needs [worldid.rp] (the rp id and its nonces)")
    legacy = t.get("legacy", True)
    if not isinstance(legacy, bool):
        c.problem("worldid.legacy", f"expected true or false, got {legacy!r}")
        legacy = True
    if not legacy and "chain" not in t and not t.get("cloud_verify_url"):
        c.problem("worldid.legacy", "false needs a way to verify 4.0: [worldid.chain] or cloud_verify_url")
    ids = t.get("issuer_schema_ids", [])
    if not isinstance(ids, list) or not all(isinstance(i, int) and 0 <= i < 2**64 for i in ids):
        c.problem("worldid.issuer_schema_ids", "expected a list of uint64 schema ids")
        ids = []
    return {
        "rp": rp,
        "chain": chain,
        "legacy": legacy,
        "expiry_threshold": float(_num(c, t, "expiry_threshold", 18000, 0, 10**8, integer=False)),
        "issuer_schema_ids": frozenset(ids),
        "v4_vk_json": read_vk_file(c, "worldid.v4_vk_file", _str(c, t, "v4_vk_file", ""))
        if "v4_vk_file" in t
        else None,
    }


def collect_settings(c: Collector, t: Any, store_url: str, env: Any = None) -> WorldIdSettings | None:
    """Validate ``[worldid]``, recording every problem in ``c``; None when there were any."""
    before = len(c.problems)
    if not isinstance(t, dict):
        c.problem("worldid", "expected a table")
        return None
    c.unknown_keys("worldid", t, KEYS)
    app_id = t.get("app_id")
    if not isinstance(app_id, str) or not app_id:
        c.problem("worldid.app_id", "required: the World ID app id (app_...)")
        app_id = ""
    levels = t.get("verification_levels", [])
    if not isinstance(levels, list) or not all(isinstance(x, str) for x in levels):
        c.problem("worldid.verification_levels", "expected a list of strings")
        levels = []
    url = _str(c, t, "cloud_verify_url", "")
    if url and not re.match(r"^https?://", url):
        c.problem("worldid.cloud_verify_url", f"expected an http(s) URL, got {url!r}")
    settings = WorldIdSettings(
        app_id=app_id,
        action=_str(c, t, "action", ""),
        vk_json=_vk(c, t),
        roots=_roots(c, c.table("roots", t), store_url),
        rotate=_choice(c, t, "rotate", tuple(ROTATIONS), "none"),
        signal=_choice(c, t, "signal", ("empty", "client"), "empty"),
        verification_levels=frozenset(levels),
        sessions_per_nullifier=_num(c, t, "sessions_per_nullifier", 1, 1, 100),
        session_ttl=_num(c, t, "session_ttl", 3600, 1, 30 * 86400),
        workers=_num(c, t, "workers", 1, 1, 64),
        queue_limit=_num(c, t, "queue_limit", 32, 0, 100000),
        cache_size=_num(c, t, "cache_size", 4096, 1, 10**7),
        gate_rate=_num(c, t, "gate_rate", 20, 1, 10**9),
        gate_window=float(_num(c, t, "gate_window", 60, 0.001, 86400, integer=False)),
        cloud_verify_url=url,
        cloud_timeout=float(_num(c, t, "cloud_timeout", 10, 0.01, 120, integer=False)),
        **_v4(c, t, env),
    )
    return None if len(c.problems) > before else settings
