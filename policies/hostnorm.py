"""Host normalization: the one canonical spelling of a request's host.

Policy host rules, the hashcash resource and ``X-Forwarded-Host`` all use
:func:`normalize_host`, so ``Secret.Example.``, ``secret.example:443`` and
``SECRET.example`` are one host:

1. case is folded to lower;
2. one trailing dot (the DNS root) is removed;
3. the port is split off and checked (``0``–``65535``; an empty port is no port);
4. an IPv6 literal keeps its brackets, in compressed form (``[2001:DB8:0::1]`` →
   ``[2001:db8::1]``); zone ids are refused;
5. a non-ASCII name becomes IDNA A-labels (UTS #46 mapping, IDNA 2008):
   ``bücher.example`` → ``xn--bcher-kva.example``;
6. what is left must be a DNS-style name: labels of ``a-z 0-9 - _``, 1 to 63
   characters each, 253 in all. Anything else raises ``ValueError``.

The common case (an ASCII lower-case name, maybe with a port) is one regex match.
"""

from __future__ import annotations

import ipaddress
import re

import idna

_LABEL = r"[a-z0-9_-]{1,63}"
_FAST = re.compile(rf"({_LABEL}(?:\.{_LABEL})*)(?::([0-9]{{1,5}}))?")
_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
MAX_NAME = 253


def normalize_host(raw: str) -> tuple[str, int | None]:
    """``(host, port)`` for a ``Host`` value or a target's authority; ``ValueError`` if invalid."""
    m = _FAST.fullmatch(raw)
    if m is not None and len(m.group(1)) <= MAX_NAME:
        port = m.group(2)
        return m.group(1), _port(port) if port is not None else None
    text = raw.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError("unclosed IPv6 literal")
        if "%" in text[:end]:
            raise ValueError("IPv6 zone ids are not hosts")
        try:
            addr = ipaddress.IPv6Address(text[1:end])
        except ValueError:
            raise ValueError("invalid IPv6 literal") from None
        rest = text[end + 1 :]
        if rest and not rest.startswith(":"):
            raise ValueError("junk after IPv6 literal")
        return f"[{addr.compressed}]", _port(rest[1:]) if rest[1:] else None
    name, colon, port_text = text.rpartition(":") if ":" in text else (text, "", "")
    if ":" in name:
        raise ValueError("an IPv6 address needs brackets")
    return normalize_name(name), _port(port_text) if colon and port_text else None


def normalize_name(name: str) -> str:
    """A host name (no port) in canonical form; ``ValueError`` if it is not one."""
    name = name.lower()
    if name.endswith("."):
        name = name[:-1]
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except UnicodeError as exc:  # idna.IDNAError is one
            raise ValueError(f"invalid internationalized name: {exc}") from None
        if name.endswith("."):  # a mapped full-width dot (U+3002) at the end
            name = name[:-1]
    if len(name) > MAX_NAME or _NAME.fullmatch(name) is None:
        raise ValueError("not a host name")
    return name


def normalize_host_glob(glob: str) -> str:
    """A policy's host glob in the same form (``*`` labels kept as they are)."""
    glob = glob.lower()
    if glob.endswith("."):
        glob = glob[:-1]
    if glob.isascii():
        return glob
    return ".".join(
        label if "*" in label or label.isascii() else idna.encode(label, uts46=True).decode("ascii")
        for label in glob.split(".")
    )


def _port(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 5 or int(text) > 65535:
        raise ValueError("invalid port")
    return int(text)
