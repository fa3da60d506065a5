"""A collector that gathers every configuration problem with its key path.

Validation never stops at the first problem: each check records what is
wrong and where, and the caller raises :class:`ConfigError` once with the
whole list. Also the readers every table shares: secrets and key rings.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from popgate.verifiers.errors import VerificationError
from popgate.verifiers.groth16 import parse_vk

MIN_SECRET_BYTES = 32
KID_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists each with its path."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


def set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``dotted == "a.b"``, making tables."""
    *heads, last = dotted.split(".")
    node = data
    for head in heads:
        node = node.setdefault(head, {})
    node[last] = value


class Collector:
    """Records problems as ``"key.path: message"`` strings."""

    __slots__ = ("data", "problems")

    def __init__(self, data: dict[str, Any], problems: list[str]) -> None:
        self.data = data
        self.problems = problems

    def problem(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}" if path else message)

    def table(self, name: str, parent: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the sub-table ``name`` (empty when absent; a problem when not a table)."""
        value = (self.data if parent is None else parent).get(name, {})
        if not isinstance(value, dict):
            self.problem(name, "expected a table")
            return {}
        return value

    def unknown_keys(self, path: str, table: dict[str, Any], known: set[str]) -> None:
        for k in table:
            if k not in known:
                where = f"{path}.{k}" if path else k
                self.problem(where, f"unknown key (expected one of: {', '.join(sorted(known))})")

    def number(
        self,
        path: str,
        value: Any,
        *,
        lo: float | None = None,
        hi: float | None = None,
        integer: bool = False,
    ) -> float | int | None:
        """Check a number's type and range; return it or None after a problem."""
        if not isinstance(value, int if integer else (int, float)) or isinstance(value, bool):
            self.problem(path, f"expected {'an integer' if integer else 'a number'}, got {value!r}")
            return None
        if lo is not None and value < lo:
            self.problem(path, f"must be >= {lo}, got {value}")
            return None
        if hi is not None and value > hi:
            self.problem(path, f"must be <= {hi}, got {value}")
            return None
        return value


def read_vk_file(c: Collector, where: str, path: str) -> Any:
    """A snarkjs verification key from ``path``, parsed once to check it; None
    (and a problem at ``where``) when it cannot be read or is not a key."""
    try:
        vk = json.loads(Path(path).read_text())
        parse_vk(vk)
        return vk
    except OSError as exc:
        c.problem(where, f"cannot read {path}: {exc.strerror}")
    except ValueError:
        c.problem(where, f"{path}: not JSON")
    except VerificationError as exc:
        c.problem(where, f"{path}: not a valid key ({exc.detail})")
    return None


def read_secret(c: Collector, path: str, t: dict[str, Any], env: Any) -> bytes | None:
    """Read a secret named by ``secret_file`` or ``secret_env`` in table ``t``."""
    if "secret" in t:
        c.problem(f"{path}.secret", "inline secrets are not accepted: use secret_file or secret_env")
        return None
    if "secret_file" in t:
        try:
            raw = Path(str(t["secret_file"])).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            c.problem(f"{path}.secret_file", f"cannot read {t['secret_file']}: {exc.strerror}")
            return None
    elif "secret_env" in t:
        val = env.get(str(t["secret_env"]))
        if not val:
            c.problem(f"{path}.secret_env", f"environment variable {t['secret_env']} is unset or empty")
            return None
        raw = val.encode()
    else:
        c.problem(path, "needs secret_file or secret_env")
        return None
    if len(raw) < MIN_SECRET_BYTES:
        c.problem(path, f"secret too short: {len(raw)} bytes, need at least {MIN_SECRET_BYTES}")
        return None
    return raw


def read_keyring(c: Collector, path: str, t: dict[str, Any], env: Any) -> tuple[dict[str, bytes], str]:
    """Read ``keys = [{kid, secret_file|secret_env}, ...]`` and ``signing_kid``."""
    keys: dict[str, bytes] = {}
    entries = t.get("keys")
    if not isinstance(entries, list) or not entries:
        c.problem(f"{path}.keys", "at least one key is required (generate one with `popgate keys generate`)")
        return keys, ""
    for i, entry in enumerate(entries):
        p = f"{path}.keys[{i}]"
        if not isinstance(entry, dict):
            c.problem(p, "expected a table with kid and secret_file or secret_env")
            continue
        kid = entry.get("kid")
        if not isinstance(kid, str) or not KID_RE.match(kid):
            c.problem(f"{p}.kid", "required: 1-32 characters of A-Z a-z 0-9 _ -")
            continue
        if kid in keys:
            c.problem(f"{p}.kid", f"duplicate key id {kid!r}")
        secret = read_secret(c, p, entry, env)
        if secret is not None:
            keys[kid] = secret
    signing = t.get("signing_kid", entries[0].get("kid") if isinstance(entries[0], dict) else "")
    if isinstance(signing, str) and keys and signing not in keys:
        c.problem(f"{path}.signing_kid", f"names no configured key: {signing!r}")
    return keys, str(signing)
