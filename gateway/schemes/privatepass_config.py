"""``[privatepass]`` settings, validated once at start-up (every problem with its key path).

```toml
[privatepass]
session_class = "human"        # the class a valid token earns (any class but backed-agent)
session_ttl = 3600             # seconds of the session it earns
challenge_window = 300         # a challenge's redemption context changes every window;
                               # tokens for the current and the previous window are accepted
# origin_info = ["api.example.com"]   # default: the request's host
directory_ttl = 3600           # directories are re-fetched after at most this (or their max-age)
directory_timeout = 5.0        # one directory fetch, seconds (then the cached keys)
allow_http_directories = false # tests only
challenge_status = 402         # 401: answer challenges that offer a PrivateToken with 401 (Apple's
                               # clients only answer PrivateToken challenges on 401)
[[privatepass.issuers]]
name = "issuer.example"        # the issuer_name the challenge carries
directory = "https://issuer.example"   # fetches /.well-known/private-token-issuer-directory, or
# token_keys = ["MIIBUjA9BgkqhkiG9w0BAQow…"]   # base64url SPKI keys (RSASSA-PSS, RSA-2048)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from popgate.gateway.ops import validation as pc
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.privatepass import IssuerKey, b64u_decode, load_token_key

_NUMBERS: dict[str, tuple[float, float, float, bool]] = {
    "session_ttl": (3600, 1, 30 * 86400, True),
    "challenge_window": (300, 10, 86400, True),
    "directory_ttl": (3600, 1, 7 * 86400, True),
    "directory_timeout": (5.0, 0.1, 60, False),
}
SESSION_CLASSES = ("human", "account", "verified-agent", "agent", "unknown")


@dataclass(frozen=True, slots=True)
class IssuerSettings:
    name: str
    directory: str | None
    keys: tuple[IssuerKey, ...]


@dataclass(frozen=True, slots=True)
class PrivatePassSettings:
    issuers: tuple[IssuerSettings, ...]
    session_class: str = "human"
    session_ttl: int = 3600
    challenge_window: int = 300
    origin_info: tuple[str, ...] = ()
    directory_ttl: int = 3600
    directory_timeout: float = 5.0
    challenge_status: int = 402


def collect_settings(c: pc.Collector, raw: Any) -> PrivatePassSettings | None:
    """Validate ``[privatepass]``, recording every problem in ``c``; None when there were any."""
    before = len(c.problems)
    t = c.table("privatepass", {"privatepass": raw})
    c.unknown_keys(
        "privatepass",
        t,
        {"issuers", "session_class", "origin_info", "allow_http_directories", "challenge_status", *_NUMBERS},
    )
    nums: dict[str, Any] = {}
    for name, (default, lo, hi, integer) in _NUMBERS.items():
        v = c.number(f"privatepass.{name}", t.get(name, default), lo=lo, hi=hi, integer=integer)
        nums[name] = v if v is not None else default
    klass = t.get("session_class", "human")
    if klass not in SESSION_CLASSES:
        c.problem("privatepass.session_class", f"expected one of {', '.join(SESSION_CLASSES)}, got {klass!r}")
    insecure = t.get("allow_http_directories", False)
    if not isinstance(insecure, bool):
        c.problem("privatepass.allow_http_directories", f"expected true or false, got {insecure!r}")
        insecure = False
    origins = t.get("origin_info", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) and 0 < len(o) < 256 for o in origins):
        c.problem("privatepass.origin_info", "expected a list of host names")
        origins = []
    status = t.get("challenge_status", 402)
    if status not in (401, 402) or isinstance(status, bool):
        c.problem("privatepass.challenge_status", f"expected 402 or 401, got {status!r}")
    issuers = _issuers(c, t.get("issuers"), insecure)
    if len(c.problems) > before:
        return None
    return PrivatePassSettings(
        issuers=tuple(issuers),
        session_class=str(klass),
        origin_info=tuple(o.lower() for o in origins),
        challenge_status=int(status),
        **nums,
    )


def _issuers(c: pc.Collector, raw: Any, insecure: bool) -> list[IssuerSettings]:
    if not isinstance(raw, list) or not raw:
        c.problem("privatepass.issuers", "at least one [[privatepass.issuers]] table is required")
        return []
    out: list[IssuerSettings] = []
    for i, entry in enumerate(raw):
        path = f"privatepass.issuers[{i}]"
        if not isinstance(entry, dict):
            c.problem(path, "expected a table with name and directory or token_keys")
            continue
        c.unknown_keys(path, entry, {"name", "directory", "token_keys"})
        name = entry.get("name")
        if not isinstance(name, str) or not 0 < len(name.encode()) < 1 << 16:
            c.problem(f"{path}.name", "required: the issuer name (e.g. its host name)")
            continue
        if ("directory" in entry) == ("token_keys" in entry):
            c.problem(path, "give exactly one of directory, token_keys")
            continue
        directory = entry.get("directory")
        if directory is not None and not _directory_ok(directory, insecure):
            c.problem(
                f"{path}.directory", f"not an https URL: {directory!r} (allow_http_directories for tests)"
            )
            continue
        keys = _keys(c, f"{path}.token_keys", entry.get("token_keys", []))
        out.append(IssuerSettings(name, str(directory).rstrip("/") if directory else None, tuple(keys)))
    return out


def _directory_ok(url: Any, insecure: bool) -> bool:
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return bool(parts.netloc) and (parts.scheme == "https" or (insecure and parts.scheme == "http"))


def _keys(c: pc.Collector, path: str, raw: Any) -> list[IssuerKey]:
    if not isinstance(raw, list):
        c.problem(path, "expected a list of base64url token keys")
        return []
    keys = []
    for i, k in enumerate(raw):
        try:
            keys.append(load_token_key(b64u_decode(k)))
        except VerificationError as exc:
            c.problem(f"{path}[{i}]", f"not a token key: {exc.detail}")
    return keys
