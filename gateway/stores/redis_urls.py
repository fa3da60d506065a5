"""Parsing of the multi-node Redis store URLs (no client library needed).

- ``redis+cluster://[user:pass@]HOST:PORT[,HOST:PORT...]/`` (``rediss+cluster://``
  for TLS): a Redis Cluster's startup nodes, database 0 only.
- ``redis+sentinel://[user:pass@]HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB]``
  (``rediss+sentinel://`` for TLS): the Sentinels watching the master named
  MASTERNAME. The credentials are the data nodes' (master and replicas); the
  Sentinels are asked without them.

Both raise ValueError with what is wrong; config validation reports it under
``store.url``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
SENTINEL_SCHEMES = ("redis+sentinel://", "rediss+sentinel://")
REDIS_SCHEMES = ("redis://", "rediss://", *CLUSTER_SCHEMES, *SENTINEL_SCHEMES)
_NODE = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?")
_MASTER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")


@dataclass(frozen=True)
class SentinelURL:
    """What a ``redis+sentinel://`` URL names."""

    sentinels: list[tuple[str, int]]
    master: str
    db: int = 0
    options: dict[str, Any] = field(default_factory=dict)  # username, password, ssl


def _split(url: str, schemes: tuple[str, str], kind: str) -> tuple[str, str, str]:
    scheme = next((s for s in schemes if url.startswith(s)), None)
    if scheme is None:
        raise ValueError(f"not a {kind} URL (expected {' or '.join(schemes)}): {url!r}")
    netloc, _, tail = url[len(scheme) :].partition("/")
    if "?" in netloc or "#" in netloc or "?" in tail or "#" in tail:
        raise ValueError(f"{schemes[0]} URLs take no query or fragment")
    return scheme, netloc, tail


def _nodes(
    netloc: str, scheme: str, kind: str, default_port: int
) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    opts: dict[str, Any] = {"ssl": scheme.startswith("rediss")}
    userinfo, at, hosts = netloc.rpartition("@")
    if at:
        user, colon, password = userinfo.partition(":")
        opts["username"] = unquote(user) or None
        opts["password"] = unquote(password) if colon else None
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        m = _NODE.fullmatch(item.strip())
        if m is None:
            raise ValueError(f"bad {kind} node {item!r} (expected HOST:PORT)")
        port = int(m.group(2) or default_port)
        if not 0 < port < 65536:
            raise ValueError(f"bad port in {kind} node {item!r}")
        nodes.append((m.group(1).strip("[]"), port))
    return nodes, opts


def parse_cluster_url(url: str) -> tuple[list[tuple[str, int]], dict[str, Any]]:
    """Split ``redis+cluster://[user:pass@]H:P[,H:P...]/`` into startup nodes and
    client options (username, password, ssl). Raises ValueError when malformed."""
    scheme, netloc, tail = _split(url, CLUSTER_SCHEMES, "cluster")
    if tail not in ("", "0"):
        raise ValueError(f"a Redis Cluster has only database 0, got /{tail}")
    return _nodes(netloc, scheme, "cluster", 6379)


def parse_sentinel_url(url: str) -> SentinelURL:
    """Split ``redis+sentinel://[user:pass@]H:P[,H:P...]/MASTER[/DB]``. Raises
    ValueError when malformed (no Sentinel, no or bad master name, bad DB)."""
    scheme, netloc, tail = _split(url, SENTINEL_SCHEMES, "sentinel")
    nodes, opts = _nodes(netloc, scheme, "sentinel", 26379)
    master, _, db = tail.partition("/")
    if not _MASTER_NAME.fullmatch(master):
        raise ValueError(
            f"expected the monitored master's name after the Sentinels (…/MASTERNAME[/DB]), got /{tail}"
        )
    if db and not (db.isdigit() and len(db) <= 4):
        raise ValueError(f"bad database /{db} (expected a number)")
    return SentinelURL(nodes, master, int(db or 0), opts)
