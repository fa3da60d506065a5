"""A collector that gathers every configuration problem with its key path.

Validation never stops at the first problem: each check records what is
wrong and where, and the caller raises once with the whole list.
"""

from __future__ import annotations

from typing import Any


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
    import json
    from pathlib import Path

    from popgate.verifiers.errors import VerificationError
    from popgate.verifiers.groth16 import parse_vk

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
