"""Configuration: a TOML file plus command-line overrides, validated once.

Every table is validated in the same pass, the feature tables too
(:mod:`gateway.ops.features`: ``config.features`` holds their typed settings).

:func:`load_config` reads the file, applies overrides and returns a frozen
:class:`Config`, or raises :class:`ConfigError` listing *every* problem with
its key path (``sessions.keys[1].secret_env: environment variable ... unset``).
Nothing here is read again per request.

Secrets never sit in the file itself: a key names ``secret_file`` (the file's
bytes, a trailing newline removed) or ``secret_env`` (an environment variable).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from popgate.gateway.ops import validation as pc
from popgate.gateway.ops.config_paths import resolve_paths
from popgate.gateway.ops.features import SECTIONS, Features, collect_features
from popgate.gateway.ops.validation import MIN_SECRET_BYTES, ConfigError, read_keyring, read_secret
from popgate.gateway.stores.redis_urls import (
    CLUSTER_SCHEMES,
    REDIS_SCHEMES,
    SENTINEL_SCHEMES,
    parse_cluster_url,
    parse_sentinel_url,
)

__all__ = [
    "MIN_SECRET_BYTES",
    "Config",
    "ConfigError",
    "build_config",
    "load_config",
    "read_keyring",
    "read_secret",
]

CLASSES = ("human", "account", "backed-agent", "verified-agent", "agent", "unknown")
DEFAULT_ACTIONS = ("allow", "challenge", "deny")
FAILURE_MODES = ("closed", "open")
# Store-backed actions whose failure mode an operator may choose (gateway/stores/failure.py):
# spend (puzzle solutions, stamps, nullifiers), replay (id_tokens, signature
# nonces), rate_limit (throttles and exchange gates), budget (budgeted sessions).
FAILURE_ACTIONS = frozenset({"default", "spend", "replay", "rate_limit", "budget"})


@dataclass(frozen=True, slots=True)
class HostPort:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def bind_host(self) -> str | None:
        """The host to bind: None (every interface, IPv4 and IPv6) for ``:PORT``."""
        return self.host or None


@dataclass(frozen=True, slots=True)
class Upstream:
    url: str
    scheme: str
    host: str
    port: int

    @property
    def authority(self) -> str:
        default = 443 if self.scheme == "https" else 80
        return self.host if self.port == default else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Limits:
    max_header_bytes: int = 16384
    max_header_count: int = 100
    max_body_bytes: int = 10 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    pool_size: int = 256
    keepalive_timeout: float = 30.0
    buffer_below: int = 65536
    client_header_timeout: float = 10.0  # whole request head, from first byte (or accept)
    client_body_timeout: float = 30.0  # longest client silence while a body is due
    client_keepalive_timeout: float = 75.0  # idle client connection between requests
    pool_wait: float = 2.0  # longest wait for an upstream slot: then 503 upstream_busy
    pool_reserved: float = 0.25  # share of pool_size anonymous requests cannot take
    network_requests: int = 64  # anonymous requests in flight per client network: then 429
    body_min_rate: int = 1024  # bytes/s a request body must average (after body_grace)
    body_grace: float = 5.0  # seconds before the minimum rate applies
    request_buffer: int = 65536  # body bytes read before an upstream slot is taken (0: full duplex)


@dataclass(frozen=True, slots=True)
class Sessions:
    keys: dict[str, bytes]
    signing_kid: str
    subject_key: bytes
    ttl: int = 3600
    cookie_name: str = "popgate_session"
    cookie_secure: bool = False


@dataclass(frozen=True, slots=True)
class StoreConfig:
    url: str = "sqlite:///var/popgate/store.db"
    timeout: float = 0.5
    failure_modes: dict[str, str] = field(default_factory=dict)
    replica_acks: int | None = None  # Redis WAIT per write; None: 1 with Sentinel, else 0

    def mode(self, action: str) -> str:
        """Failure mode for ``action``: closed unless configured open."""
        return self.failure_modes.get(action, self.failure_modes.get("default", "closed"))


@dataclass(frozen=True, slots=True)
class PolicyConfig:
    actions: dict[str, str]
    file: str | None = None


@dataclass(frozen=True, slots=True)
class PuzzleConfig:
    """``[puzzle]``: challenge MAC keys and what a solved puzzle buys."""

    keys: dict[str, bytes]
    signing_kid: str
    bits: int = 16  # floor when the policy names none
    subs: int = 1  # sub-solutions per challenge (bounded variance)
    ttl: int = 300  # challenge lifetime, seconds
    session_ttl: int = 900  # session bought with POST /.well-known/popgate/puzzle
    session_budget: int = 200  # requests that session is good for (0: no budget)
    hashcash: bool = True  # accept self-minted hashcash v1 stamps where the policy does
    hashcash_max_age: int = 172800  # >= 1 day: stamps dated YYMMDD mean midnight UTC


@dataclass(frozen=True, slots=True)
class Config:
    """The validated configuration; built by :func:`load_config`."""

    listen: HostPort
    admin: HostPort
    upstream: Upstream | None  # None in forward-auth mode: popgate carries no bytes
    sessions: Sessions
    store: StoreConfig
    policy: PolicyConfig
    limits: Limits = Limits()
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    shutdown_timeout: float = 30.0
    via_name: str = "popgate"
    access_log: bool = False
    upstream_client: str = "lean"
    mode: str = "inline"  # "inline" (proxy; serves the auth endpoint too) | "auth" (forward-auth only)
    auth_listen: HostPort | None = None  # the lean forward-auth listener (gateway.http.auth_listener)
    puzzle: PuzzleConfig | None = None
    features: Features = field(default_factory=Features)  # the feature tables, validated
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def puzzle_keys(self) -> dict[str, bytes]:
        """``[puzzle]`` keys (kid -> secret), as ``popgate verify puzzle`` reads them."""
        return dict(self.puzzle.keys) if self.puzzle is not None else {}

    @property
    def puzzle_signing_kid(self) -> str:
        return self.puzzle.signing_kid if self.puzzle is not None else ""


def load_config(
    path: str | os.PathLike[str] | None,
    overrides: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> Config:
    """Read ``path`` (TOML; may be None), apply ``overrides`` and validate.

    ``overrides`` maps dotted keys (``server.upstream``) to values, as the CLI
    flags give them. Raises ConfigError with every problem found.
    """
    problems: list[str] = []
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
        except UnicodeDecodeError as exc:
            raise ConfigError([f"{path}: not UTF-8 text (byte {exc.start}); save it as UTF-8"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
        resolve_paths(data, Path(path).absolute().parent)
    for dotted, value in (overrides or {}).items():
        if value is not None:
            pc.set_dotted(data, dotted, value)
    return build_config(data, problems, os.environ if env is None else env)


def _nul_strings(value: Any, where: str) -> list[str]:
    """Key paths of strings holding a NUL (TOML can spell one; no path or name can hold it)."""
    if isinstance(value, str):
        return [f"{where or '(top)'}: NUL character in a string"] if "\x00" in value else []
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _nul_strings(v, f"{where}.{k}" if where else str(k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _nul_strings(v, f"{where}[{i}]")]
    return []


def build_config(data: dict[str, Any], problems: list[str], env: Any) -> Config:
    """Validate a parsed config dict; raise ConfigError listing all problems."""
    nul = _nul_strings(data, "")
    if nul:
        raise ConfigError(problems + nul)
    c = pc.Collector(data, problems)
    c.unknown_keys("", data, {"server", "limits", "sessions", "store", "policy"} | _extension_sections())
    server = c.table("server")
    c.unknown_keys(
        "server",
        server,
        {
            "listen",
            "admin",
            "upstream",
            "trusted_proxies",
            "shutdown_timeout",
            "via_name",
            "access_log",
            "upstream_client",
            "mode",
            "auth_listen",
        },
    )
    client = server.get("upstream_client", "lean")
    if client not in ("lean", "aiohttp"):
        c.problem("server.upstream_client", f'expected "lean" or "aiohttp", got {client!r}')
    listen = _host_port(c, "server.listen", server.get("listen", "127.0.0.1:8080"))
    admin = _host_port(c, "server.admin", server.get("admin", "127.0.0.1:9090"))
    mode = server.get("mode", "inline")
    trusted = _networks(c, "server.trusted_proxies", server.get("trusted_proxies", []))
    auth_listen = None
    if "auth_listen" in server:
        auth_listen = _host_port(c, "server.auth_listen", server["auth_listen"])
        if not server.get("trusted_proxies"):
            c.problem(
                "server.trusted_proxies",
                "required with auth_listen: the addresses of the proxy that makes the auth calls",
            )
    upstream = None
    if mode == "inline":
        upstream = _upstream(c, "server.upstream", server.get("upstream"))
    elif mode == "auth":
        _auth_mode(c, server, trusted)
    else:
        c.problem("server.mode", f'expected "inline" or "auth", got {mode!r}')
    shutdown = c.number("server.shutdown_timeout", server.get("shutdown_timeout", 30.0), lo=0)
    limits = _limits(c, c.table("limits"))
    sessions = _sessions(c, c.table("sessions"), env)
    store = _store(c, c.table("store"))
    policy = _policy(c, c.table("policy"))
    puzzle = _puzzle(c, c.table("puzzle"), env) if "puzzle" in data else None
    features = collect_features(c, data, env, str(store.url))
    if mode == "auth" and features.forward_auth.inline_routes:
        c.problem(
            "forward_auth.inline_routes",
            'popgate carries these routes itself: it needs [server] upstream (mode = "inline")',
        )
    if mode == "auth" and features.x402 is not None and features.x402.upto is not None:
        c.problem(
            "x402.upto",
            "upto settles what the origin's answer reports, which popgate sees only inline:"
            ' it needs [server] upstream (mode = "inline")',
        )
    if problems:
        raise ConfigError(problems)
    if listen is None or admin is None or sessions is None or shutdown is None:
        raise ConfigError(["server: a required setting was rejected without a reported problem"])
    if upstream is None and mode == "inline":
        raise ConfigError(["server: a required setting was rejected without a reported problem"])
    return Config(
        listen=listen,
        admin=admin,
        upstream=upstream,
        sessions=sessions,
        store=store,
        policy=policy,
        limits=limits,
        trusted_proxies=tuple(trusted),
        shutdown_timeout=float(shutdown),
        via_name=str(server.get("via_name", "popgate")),
        access_log=bool(server.get("access_log", False)),
        upstream_client=str(client),
        mode=str(mode),
        auth_listen=auth_listen,
        puzzle=puzzle,
        features=features,
        raw=data,
    )


def _puzzle(c: pc.Collector, t: dict[str, Any], env: Any) -> PuzzleConfig | None:
    d = {
        f: v.default for f, v in PuzzleConfig.__dataclass_fields__.items() if f not in ("keys", "signing_kid")
    }
    c.unknown_keys("puzzle", t, {"keys", "signing_kid", *d})
    keys, signing = read_keyring(c, "puzzle", t, env)
    lo = {"bits": 0, "subs": 1, "ttl": 10, "session_ttl": 1, "session_budget": 0, "hashcash_max_age": 86400}
    hi = {"bits": 40, "subs": 16}
    vals: dict[str, Any] = {}
    for name, default in d.items():
        if isinstance(default, bool):
            vals[name] = t.get(name, default)
            if not isinstance(vals[name], bool):
                c.problem(f"puzzle.{name}", f"expected true or false, got {vals[name]!r}")
            continue
        v = c.number(f"puzzle.{name}", t.get(name, default), lo=lo[name], integer=True)
        if v is not None and name in hi and v > hi[name]:
            c.problem(f"puzzle.{name}", f"at most {hi[name]}, got {v}")
        vals[name] = int(v) if v is not None else default
    if not keys:
        return None
    return PuzzleConfig(keys=keys, signing_kid=signing, **vals)


def _extension_sections() -> set[str]:
    """Top-level tables of the optional features (:mod:`gateway.ops.features`)."""
    return set(SECTIONS)


def _host_port(c: pc.Collector, path: str, value: Any) -> HostPort | None:
    if not isinstance(value, str):
        c.problem(path, f"expected HOST:PORT, got {value!r}")
        return None
    m = re.fullmatch(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]]*):(\d+)", value)
    if not m:
        c.problem(path, f"expected HOST:PORT or :PORT (all interfaces), got {value!r}")
        return None
    host = m.group(1) or m.group(3) or ""  # "" (from ":PORT"): every interface
    port = int(m.group(2) or m.group(4))
    if not 0 <= port <= 65535:
        c.problem(path, f"port out of range: {port}")
        return None
    return HostPort(host, port)


def _upstream(c: pc.Collector, path: str, value: Any) -> Upstream | None:
    if value is None:
        c.problem(path, "required: the URL of the origin to protect (or --upstream)")
        return None
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        c.problem(path, f"expected an http:// or https:// URL, got {value!r}")
        return None
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        c.problem(path, "must be scheme://host[:port] with no path, query or fragment")
        return None
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        c.problem(path, f"invalid port in {value!r}")
        return None
    return Upstream(str(value).rstrip("/"), parts.scheme, parts.hostname, port)


def _auth_mode(c: pc.Collector, server: dict[str, Any], trusted: list[Any]) -> None:
    """Forward-auth mode: no origin, and a proxy whose forward-auth headers popgate believes."""
    if "upstream" in server:
        c.problem(
            "server.upstream",
            'not used with mode = "auth" (the proxy carries the bytes); drop it, '
            'or use mode = "inline", which serves the auth endpoint too',
        )
    if not server.get("trusted_proxies"):
        c.problem(
            "server.trusted_proxies",
            'required with mode = "auth": the addresses of the proxy that calls /.well-known/popgate/auth',
        )


def _networks(c: pc.Collector, path: str, value: Any) -> list[Any]:
    out: list[Any] = []
    if not isinstance(value, list):
        c.problem(path, "expected a list of CIDR strings")
        return out
    for i, item in enumerate(value):
        try:
            out.append(ipaddress.ip_network(str(item), strict=False))
        except ValueError:
            c.problem(f"{path}[{i}]", f"not an IP network: {item!r}")
    return out


def _limits(c: pc.Collector, t: dict[str, Any]) -> Limits:
    d = Limits()
    names = {f: getattr(d, f) for f in Limits.__dataclass_fields__}
    c.unknown_keys("limits", t, set(names))
    vals: dict[str, Any] = {}
    for name, default in names.items():
        v = c.number(f"limits.{name}", t.get(name, default), lo=0, integer=isinstance(default, int))
        vals[name] = v if v is not None else default
    if vals["max_header_count"] < 8:
        c.problem("limits.max_header_count", "must be at least 8")
    for name in ("client_header_timeout", "client_body_timeout", "client_keepalive_timeout", "pool_wait"):
        if not vals[name] > 0:
            c.problem(f"limits.{name}", "must be more than 0 seconds")
    if not 0 <= vals["pool_reserved"] < 1:
        c.problem("limits.pool_reserved", "must be at least 0 and below 1 (a share of pool_size)")
    for name in ("pool_size", "network_requests"):
        if vals[name] < 1:
            c.problem(f"limits.{name}", "must be at least 1")
    return Limits(**vals)


def _sessions(c: pc.Collector, t: dict[str, Any], env: Any) -> Sessions | None:
    c.unknown_keys(
        "sessions", t, {"keys", "signing_kid", "ttl", "cookie_name", "cookie_secure", "subject_key"}
    )
    keys, signing = read_keyring(c, "sessions", t, env)
    subject_key = None
    if "subject_key" in t:
        subject_key = read_secret(c, "sessions.subject_key", c.table("subject_key", t), env)
    ttl = c.number("sessions.ttl", t.get("ttl", 3600), lo=1, integer=True)
    cookie = t.get("cookie_name", "popgate_session")
    if not isinstance(cookie, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", cookie):
        c.problem("sessions.cookie_name", "must be 1-64 characters of A-Z a-z 0-9 _ -")
    if not keys:
        return None
    if subject_key is None:
        # Derived from the first key: set sessions.subject_key so pseudonyms
        # survive rotating that key away.
        first = next(iter(keys.values()))
        subject_key = hmac.new(first, b"popgate-subject-key", hashlib.sha256).digest()
    return Sessions(
        keys=keys,
        signing_kid=signing,
        subject_key=subject_key,
        ttl=int(ttl or 3600),
        cookie_name=str(cookie),
        cookie_secure=bool(t.get("cookie_secure", False)),
    )


def _store(c: pc.Collector, t: dict[str, Any]) -> StoreConfig:
    c.unknown_keys("store", t, {"url", "timeout", "failure_mode", "replica_acks"})
    url = t.get("url", "sqlite:///var/popgate/store.db")
    if not isinstance(url, str) or not url.startswith(("memory://", "sqlite:///", *REDIS_SCHEMES)):
        c.problem(
            "store.url",
            "expected memory://, sqlite:///PATH, redis://HOST:PORT/DB, "
            "redis+cluster://HOST:PORT[,HOST:PORT...]/ or "
            f"redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB], got {url!r}",
        )
    else:
        try:
            if url.startswith(CLUSTER_SCHEMES):
                parse_cluster_url(url)
            elif url.startswith(SENTINEL_SCHEMES):
                parse_sentinel_url(url)
        except ValueError as exc:
            c.problem("store.url", str(exc))
    acks = t.get("replica_acks")
    if acks is not None and c.number("store.replica_acks", acks, lo=0, hi=16, integer=True) is not None:
        waits = ("redis://", "rediss://", *SENTINEL_SCHEMES)
        if acks and not (isinstance(url, str) and url.startswith(waits)):
            c.problem("store.replica_acks", "needs store.url = redis://... or redis+sentinel://...")
    timeout = c.number("store.timeout", t.get("timeout", 0.5), lo=0.001)
    modes = t.get("failure_mode", {})
    if not isinstance(modes, dict):
        c.problem("store.failure_mode", 'expected a table of action = "open" | "closed"')
        modes = {}
    for action, mode in modes.items():
        if action not in FAILURE_ACTIONS:
            c.problem(
                f"store.failure_mode.{action}",
                f"unknown action (expected one of: {', '.join(sorted(FAILURE_ACTIONS))}; "
                "payments and credit debits always fail closed)",
            )
        if mode not in FAILURE_MODES:
            c.problem(f"store.failure_mode.{action}", f'expected "open" or "closed", got {mode!r}')
    return StoreConfig(
        url=str(url),
        timeout=float(timeout or 0.5),
        failure_modes=dict(modes),
        replica_acks=None if acks is None else int(acks),
    )


def _policy(c: pc.Collector, t: dict[str, Any]) -> PolicyConfig:
    c.unknown_keys("policy", t, {"file", "default", *CLASSES})
    default = t.get("default", "challenge")
    actions = {}
    for klass in CLASSES:
        fallback = t.get("verified-agent", "allow") if klass == "backed-agent" else "allow"
        action = t.get(klass, fallback if klass != "unknown" else default)
        if action not in DEFAULT_ACTIONS:
            c.problem(f"policy.{klass}", f"expected one of {', '.join(DEFAULT_ACTIONS)}, got {action!r}")
        actions[klass] = str(action)
    if default not in DEFAULT_ACTIONS:
        c.problem("policy.default", f"expected one of {', '.join(DEFAULT_ACTIONS)}, got {default!r}")
    file = t.get("file")
    if file is not None and not Path(str(file)).is_file():
        c.problem("policy.file", f"no such file: {file}")
    if file is not None:
        for k in ("default", *CLASSES):
            if k in t:
                c.problem(
                    f"policy.{k}",
                    "not used when policy.file is set: put per-class "
                    "actions in the policy file's [default] table",
                )
    return PolicyConfig(actions=actions, file=str(file) if file else None)
