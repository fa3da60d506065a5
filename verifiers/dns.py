"""DNS messages on the wire (RFC 1035), just what forward-confirmed reverse DNS needs.

:func:`query` builds a one-question query (PTR, A or AAAA, recursion desired);
:func:`parse_answer` reads a response to it and returns the answers of the asked
type for the asked name, following CNAMEs inside the message. Anything that is not
a well-formed answer to *that* query (other id, truncated, compression loops,
names past 255 bytes, a server error) raises :class:`DnsError`: it is parsed from
untrusted bytes, never trusted for more than it says. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import struct

from popgate.verifiers.errors import VerificationError
from popgate.verifiers.net import IPAddress

A, PTR, AAAA, CNAME = 1, 12, 28, 5
NXDOMAIN = 3
_MAX_NAME = 255
_MAX_JUMPS = 32


class DnsError(VerificationError):
    """A DNS response that cannot be used (malformed, for another query, or an error)."""

    reason = "dns_error"


def reverse_name(ip: IPAddress) -> str:
    """The PTR owner name of ``ip`` (``4.3.2.1.in-addr.arpa`` / nibbles under ``ip6.arpa``)."""
    return ip.reverse_pointer


def encode_name(name: str) -> bytes:
    """A domain name as DNS labels. Raises DnsError for an empty label or a long name."""
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("ascii", "strict") if label.isascii() else b""
        if not 0 < len(raw) < 64:
            raise DnsError(detail=f"bad label in {name!r}")
        out += bytes([len(raw)]) + raw
    out += b"\0"
    if len(out) > _MAX_NAME:
        raise DnsError(detail="name too long")
    return bytes(out)


def query(qid: int, name: str, qtype: int) -> bytes:
    """A recursive query for ``name``/``qtype`` (class IN) with message id ``qid``."""
    header = struct.pack("!HHHHHH", qid & 0xFFFF, 0x0100, 1, 0, 0, 0)
    return header + encode_name(name) + struct.pack("!HH", qtype, 1)


def read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """The (lower-cased) name at ``pos`` and the offset after it, following compression."""
    labels: list[str] = []
    end = -1
    jumps = 0
    size = 0
    while True:
        if pos >= len(msg):
            raise DnsError(detail="name runs past the message")
        n = msg[pos]
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(msg) or jumps >= _MAX_JUMPS:
                raise DnsError(detail="bad compression pointer")
            if end < 0:
                end = pos + 2
            pos = ((n & 0x3F) << 8) | msg[pos + 1]
            jumps += 1
            continue
        if n & 0xC0:
            raise DnsError(detail="reserved label type")
        pos += 1
        if n == 0:
            break
        label = msg[pos : pos + n]
        if len(label) != n:
            raise DnsError(detail="label runs past the message")
        size += n + 1
        if size > _MAX_NAME:
            raise DnsError(detail="name too long")
        labels.append(label.decode("latin-1").lower())
        pos += n
    return ".".join(labels), end if end >= 0 else pos


def _record(msg: bytes, pos: int) -> tuple[str, int, int, bytes, int, int]:
    """One resource record: (owner, type, ttl, rdata, rdata offset, next offset)."""
    owner, pos = read_name(msg, pos)
    if pos + 10 > len(msg):
        raise DnsError(detail="record header runs past the message")
    rtype, _klass, ttl, rdlen = struct.unpack_from("!HHIH", msg, pos)
    pos += 10
    rdata = msg[pos : pos + rdlen]
    if len(rdata) != rdlen:
        raise DnsError(detail="rdata runs past the message")
    return owner, rtype, ttl, rdata, pos, pos + rdlen


def parse_answer(msg: bytes, qid: int, name: str, qtype: int) -> tuple[list[str], int]:
    """The answers of type ``qtype`` for ``name`` (CNAMEs followed) and their least TTL.

    A, AAAA: addresses as text; PTR: names. NXDOMAIN or no data: ``[]``. Raises
    DnsError for a malformed message, another id or question, or a server error.
    """
    if len(msg) < 12:
        raise DnsError(detail="short message")
    rid, flags, qd, an, _ns, _ar = struct.unpack_from("!HHHHHH", msg, 0)
    if rid != qid or not flags & 0x8000 or qd != 1:
        raise DnsError(detail="not an answer to our query")
    if flags & 0x0200:
        raise DnsError(detail="truncated answer")
    rcode = flags & 0xF
    qname, pos = read_name(msg, 12)
    if pos + 4 > len(msg) or qname != name.rstrip(".").lower():
        raise DnsError(detail="answer for another question")
    if struct.unpack_from("!HH", msg, pos) != (qtype, 1):
        raise DnsError(detail="answer for another question type")
    if rcode == NXDOMAIN:
        return [], 0
    if rcode:
        raise DnsError(detail=f"server error rcode {rcode}")
    return _answers(msg, pos + 4, an, qname, qtype)


def _answers(msg: bytes, pos: int, count: int, owner: str, qtype: int) -> tuple[list[str], int]:
    records = []
    for _ in range(count):
        rname, rtype, ttl, rdata, at, pos = _record(msg, pos)
        records.append((rname, rtype, ttl, rdata, at))
    out: list[str] = []
    ttls: list[int] = []
    names = {owner}
    for _ in range(8):  # CNAME chains inside one message, bounded
        more = {read_name(msg, at)[0] for n, t, _, _, at in records if t == CNAME and n in names}
        if more <= names:
            break
        names |= more
    for rname, rtype, ttl, rdata, at in records:
        if rname not in names or rtype != qtype:
            continue
        out.append(_rdata(msg, rtype, rdata, at))
        ttls.append(ttl)
    return out, min(ttls) if ttls else 0


def _rdata(msg: bytes, rtype: int, rdata: bytes, at: int) -> str:
    if rtype == A and len(rdata) == 4:
        return str(ipaddress.IPv4Address(rdata))
    if rtype == AAAA and len(rdata) == 16:
        return str(ipaddress.IPv6Address(rdata))
    if rtype == PTR:
        return read_name(msg, at)[0]
    raise DnsError(detail=f"bad rdata for type {rtype}")
