"""The request target (RFC 9112 §3.2), read once per request.

What the policy matches and what the origin receives come from one
:class:`Target`, so they cannot disagree:

- origin-form ``/p?q``: the host is the ``Host`` header;
- absolute-form ``http://h/p?q`` (``http`` or ``https``, no userinfo): the
  target's authority is the host and ``Host`` is ignored (RFC 9112 §3.2.2);
- authority-form (``CONNECT h:p``): 405, popgate is not a tunnel;
- asterisk-form (``OPTIONS *``) and anything else: 400, never a path.

The path is normalized once (:func:`policies.pathnorm.normalize_path`: escapes,
``//``, dot-segments) and the origin is sent that path in origin-form
(:attr:`Target.forward`), the query as the client wrote it; a fragment is
dropped. Characters a request line should not carry raw (``\\``, and whatever a
lenient parser let through) are percent-encoded first. The host is normalized
by :func:`policies.hostnorm.normalize_host`; an invalid one is a 400.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from aiohttp import web

from popgate.gateway.errors import BadRequest, MethodNotAllowed
from popgate.policies.hostnorm import normalize_host
from popgate.policies.pathnorm import normalize_path

# Outside RFC 3986 pchar / "/" / "?" / "%" (so "#" too): percent-encoded before anything else.
_UNSAFE = re.compile(r"[^A-Za-z0-9\-._~!$&'()*+,;=:@/?%]")
_SAFE = "-._~!$&'()*+,;=:@/?%"
# Valid hosts seen, normalized (a gateway serves a handful of names; cleared when full).
_HOSTS: dict[str, tuple[str, int | None]] = {}
_HOSTS_MAX = 1024


class Target:
    """The parts of a request's target popgate uses (see module doc)."""

    __slots__ = ("host", "path", "port", "query", "raw_path")

    def __init__(self, raw_path: str, path: str, query: str, host: str, port: int | None) -> None:
        self.raw_path = raw_path  # the path as the client spelled it (policy ``path_form = "raw"``)
        self.path = path  # normalized: what the policy matches and the origin receives
        self.query = query
        self.host = host  # normalized, without port; "" when the request named none
        self.port = port

    @property
    def forward(self) -> str:
        """The origin-form target sent upstream."""
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def authority(self) -> str:
        """``host[:port]`` for ``X-Forwarded-Host``."""
        return self.host if self.port is None else f"{self.host}:{self.port}"


def request_target(request: web.BaseRequest) -> Target:
    """The request's :class:`Target`; raises 400 (or 405 for CONNECT) when it has none."""
    raw = request.raw_path
    if request.method == "CONNECT":  # whatever its target: popgate is not a tunnel
        raise MethodNotAllowed("CONNECT", public="popgate does not tunnel (CONNECT).")
    if raw.startswith("/"):
        host = request.headers.get("Host", "")
        rest = raw
    elif raw == "*":
        raise BadRequest(
            "asterisk-form target", reason="bad_target", public="OPTIONS * is not served: name a path."
        )
    else:
        host, rest = _absolute(raw)
    if _UNSAFE.search(rest) is not None:  # rare: a fragment, or characters to encode
        rest = _clean(rest)
    path, _, query = rest.partition("?")
    known = _HOSTS.get(host)
    if known is None:
        try:
            known = normalize_host(host) if host else ("", None)
        except ValueError as exc:
            raise BadRequest(
                f"host: {exc}", reason="bad_host", public="The request's host is invalid."
            ) from None
        if len(_HOSTS) >= _HOSTS_MAX:
            _HOSTS.clear()
        _HOSTS[host] = known
    return Target(path, normalize_path(path), query, known[0], known[1])


def _clean(rest: str) -> str:
    """Drop the fragment, percent-encode what a request line should not carry raw."""
    rest = rest.partition("#")[0]
    try:
        return quote(rest, safe=_SAFE, errors="surrogateescape")
    except UnicodeEncodeError:
        raise BadRequest("target encoding", reason="bad_target", public="The target is not UTF-8.") from None


def _absolute(raw: str) -> tuple[str, str]:
    """``(authority, path-and-query)`` of an absolute-form target."""
    scheme, sep, after = raw.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        raise BadRequest("target form", reason="bad_target", public="The request target is not a path.")
    cut = len(after)
    for ch in "/?#":
        i = after.find(ch)
        if 0 <= i < cut:
            cut = i
    authority, rest = after[:cut], after[cut:]
    if not authority or "@" in authority:
        raise BadRequest("absolute-form authority", reason="bad_target", public="Invalid target authority.")
    if not rest.startswith("/"):
        rest = "/" + rest
    return authority, rest
