"""Path normalization for policy matching.

The normalized form is what a typical upstream resolves a path to, so a rule
on ``/admin/**`` also catches ``//admin``, ``/x/../admin``, ``/%61dmin`` and
``/%2e%2e/admin``:

1. a ``%`` that starts no valid escape becomes ``%25``; percent-escapes of
   *unreserved* characters (``A-Z a-z 0-9 - . _ ~``) are decoded; every other
   escape is kept, with upper-case hex (``%2f`` → ``%2F``: an encoded slash
   stays data, as RFC 3986 says);
2. runs of ``/`` collapse to one;
3. ``.`` and ``..`` segments are removed (RFC 3986 §5.2.4; ``..`` never climbs
   above the root);
4. the result always starts with ``/``.

Case is *not* changed here: matching is case-insensitive by default instead
(see ``policies/README.md``), so ``/ADMIN`` meets a rule on ``/admin``.
Not handled (upstream-specific; add a rule on the raw form if your upstream
does these): ``\\`` as a separator, ``;`` path parameters, double decoding.
"""

from __future__ import annotations

import re

_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_STRAY = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SLASHES = re.compile(r"//+")


def _unescape(m: re.Match[str]) -> str:
    ch = chr(int(m.group(1), 16))
    return ch if ch in _UNRESERVED else "%" + m.group(1).upper()


def remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on an absolute path (segments, so ``/..`` stays at root)."""
    out: list[str] = []
    segments = path.split("/")
    for seg in segments[1:]:
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    trailing = segments[-1] in (".", "..")
    return "/" + "/".join(out) + ("/" if trailing and out else "")


def normalize_path(raw: str) -> str:
    """Return the normalized form of ``raw`` (a path without query)."""
    if not raw.startswith("/"):
        raw = "/" + raw
    if "%" not in raw and "//" not in raw and "/." not in raw:
        return raw
    # A '%' that starts no escape is a literal percent: spell it %25 first, so
    # decoding can never assemble a new escape ("%a%41" must not become "%aA").
    path = _ESCAPE.sub(_unescape, _STRAY.sub("%25", raw)) if "%" in raw else raw
    path = _SLASHES.sub("/", path)
    if "/." in path:
        path = remove_dot_segments(path)
    return path
