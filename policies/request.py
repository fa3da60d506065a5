"""Per-request values the compiled policy rules check, computed once per request.

:class:`Req` wraps a :class:`~policies.model.RequestView` with the host (no
port, lower case), the normalized path and the client address as an integer
(IPv4-mapped IPv6 counts as IPv4, :func:`verifiers.net.unmap`); a
:data:`Check` is one compiled condition of a rule (:mod:`policies.matchers`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from popgate.policies.model import RequestView
from popgate.policies.pathnorm import normalize_path
from popgate.verifiers.net import unmap


class Req:
    """Per-request derived values, each computed on first use and shared by all rules
    (a target's kept plan skips the path and host checks: then neither is computed)."""

    __slots__ = ("host", "ip_int", "ip_version", "npath", "view")
    host: str
    ip_int: int
    ip_version: int
    npath: str

    def __init__(self, view: RequestView) -> None:
        self.view = view

    def __getattr__(self, name: str) -> Any:
        """An attribute not computed yet (its slot is empty): compute it, keep it."""
        view = self.view
        if name == "host":
            host = view.host
            if host.startswith("["):
                host = host[1 : host.find("]")] if "]" in host else host
            elif host.count(":") == 1:
                host = host.partition(":")[0]
            self.host = host.lower()
            return self.host
        if name == "npath":
            self.npath = normalize_path(view.path)
            return self.npath
        if name in ("ip_int", "ip_version"):
            ip = unmap(view.client_ip)
            self.ip_int, self.ip_version = int(ip), ip.version
            return self.ip_int if name == "ip_int" else self.ip_version
        raise AttributeError(name)


Check = Callable[[Req], bool]
