"""Per-request values the compiled policy rules check, computed once per request.

:class:`Req` wraps a :class:`~policies.model.RequestView` with the host (no
port, lower case), the normalized path and the client address as an integer
(IPv4-mapped IPv6 counts as IPv4, :func:`verifiers.net.unmap`); a
:data:`Check` is one compiled condition of a rule (:mod:`policies.matchers`).
"""

from __future__ import annotations

from collections.abc import Callable

from popgate.policies.model import RequestView
from popgate.policies.pathnorm import normalize_path
from popgate.verifiers.net import unmap


class Req:
    """Per-request derived values, computed once and shared by all rules."""

    __slots__ = ("host", "ip_int", "ip_version", "npath", "view")

    def __init__(self, view: RequestView) -> None:
        self.view = view
        host = view.host
        if host.startswith("["):
            host = host[1 : host.find("]")] if "]" in host else host
        elif host.count(":") == 1:
            host = host.partition(":")[0]
        self.host = host.lower()
        self.npath = normalize_path(view.path)
        ip = unmap(view.client_ip)
        self.ip_int = int(ip)
        self.ip_version = ip.version


Check = Callable[[Req], bool]
