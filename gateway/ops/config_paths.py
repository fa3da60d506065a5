"""Relative paths in a config file resolve against the file's directory.

:func:`resolve_paths` rewrites, in the parsed TOML and before validation, every
value that names a file (``secret_file``, ``file``, ``jwks_file``, ``vk_file``,
``proof_vk_file``) and a relative ``sqlite:///PATH`` store URL, so a config
means the same whatever the working directory. Command-line overrides are
applied afterwards and stay relative to the working directory, as a shell user
expects.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

PATH_KEYS = frozenset({"secret_file", "file", "jwks_file", "vk_file", "proof_vk_file"})
SQLITE = "sqlite:///"


def resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make the file paths in ``data`` (a parsed config) absolute against ``base``, in place."""
    _walk(data, base)
    store = data.get("store")
    if isinstance(store, dict):
        url = store.get("url")
        if isinstance(url, str) and url.startswith(SQLITE):
            rest = url[len(SQLITE) :]
            if rest and not rest.startswith("/") and rest != ":memory:":
                store["url"] = SQLITE + os.path.normpath(base / rest)


def _walk(node: Any, base: Path) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in PATH_KEYS and isinstance(value, str):
                node[key] = _absolute(value, base)
            else:
                _walk(value, base)
    elif isinstance(node, list):
        for item in node:
            _walk(item, base)


def _absolute(value: str, base: Path) -> str:
    """``value`` against ``base`` when relative; empty strings (a feature's "off") stay empty."""
    if not value or "\x00" in value or Path(value).is_absolute():
        return value
    return os.path.normpath(base / value)
