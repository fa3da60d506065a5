"""Self-minted hashcash v1 stamps (``hashcash -m`` compatible).

Stamp format (hashcash.pod, "stamp format (version 1)")::

    1:bits:date:resource:ext:rand:counter

- ``bits``: claimed difficulty, decimal; the SHA-1 of the whole ASCII stamp
  must start with at least that many zero bits, and the claim must reach the
  route's ``min_bits``.
- ``date``: UTC, ``YYMMDD``, ``YYMMDDhhmm`` or ``YYMMDDhhmmss`` (the forms the
  tool writes; years are 20YY). A stamp is accepted while
  ``date <= now + skew`` and ``now - date <= max_age``.
- ``resource``: must equal the expected resource exactly (popgate uses
  ``<host><route path>`` or whatever the 402 body's ``resource`` says); any printable
  ASCII but ``:``, spaces included (the v1 format excludes only ``:``).
- ``ext``: ignored (as in v1), but limited to printable characters and spaces without ``:``.
- ``rand``, ``counter``: ``[A-Za-z0-9+/=]*`` (the counter need not be sequential).

Presented as ``X-Hashcash: <stamp>``. Double spending: a checked stamp comes
with its :class:`~verifiers.spend.Spend`, which the caller claims once in its
store (``pg:{hashcash:<sha1 hex>}`` until the stamp would be too old anyway);
no store here. Reasons: ``malformed``, ``insufficient_work``, ``expired``,
``not_yet_valid``, ``wrong_resource``, ``replayed``.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import os
import re
import time
from dataclasses import dataclass

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.spend import Spend

MAX_STAMP_LEN = 512
DEFAULT_MAX_AGE = 28 * 86400
DEFAULT_SKEW = 300.0
_FIELD_RE = re.compile(r"[A-Za-z0-9+/=]*\Z")
# v1 excludes only ':' from resource and ext: printable ASCII and space, no ':'
_EXT_RE = re.compile(r"[\x20-\x39\x3b-\x7e]*\Z")
_RESOURCE_RE = re.compile(r"[\x20-\x39\x3b-\x7e]{1,256}\Z")
_DATE_RE = re.compile(r"(\d\d)(\d\d)(\d\d)(?:(\d\d)(\d\d)(?:(\d\d))?)?\Z")


@dataclass(frozen=True, slots=True)
class Stamp:
    """A parsed (not yet verified) v1 stamp."""

    text: str
    bits: int
    date: str
    timestamp: int  # unix seconds of ``date`` (UTC)
    resource: str
    ext: str
    rand: str
    counter: str


@dataclass(frozen=True, slots=True)
class HashcashAttestation:
    resource: str
    bits: int  # zero bits actually found (>= the claim)
    timestamp: int
    digest: str
    spend: Spend  # claim once: ``replayed`` when already spent


def parse_date(date: str) -> int:
    """``YYMMDD[hhmm[ss]]`` (UTC, 20YY) to unix seconds; raises Malformed."""
    m = _DATE_RE.match(date)
    if m is None:
        raise Malformed(detail=f"bad date {date!r}")
    yy, mo, dd, hh, mi, ss = (int(g) if g is not None else 0 for g in m.groups())
    if not (
        1 <= mo <= 12
        and 1 <= dd <= calendar.monthrange(2000 + yy, mo)[1]
        and hh <= 23
        and mi <= 59
        and ss <= 59
    ):
        raise Malformed(detail=f"bad date {date!r}")
    return calendar.timegm((2000 + yy, mo, dd, hh, mi, ss, 0, 0, 0))


def parse(text: str) -> Stamp:
    """Parse a v1 stamp; pure, raises :class:`Malformed` on any syntax problem."""
    if len(text) > MAX_STAMP_LEN or not text.isascii():
        raise Malformed(detail="stamp too long or not ASCII")
    fields = text.split(":")
    if len(fields) != 7:
        raise Malformed(detail=f"expected 7 fields, got {len(fields)}")
    ver, bits, date, resource, ext, rand, counter = fields
    if ver != "1":
        raise Malformed(detail=f"unsupported version {ver!r}")
    if not (bits.isdigit() and len(bits) <= 3 and int(bits) <= 160):
        raise Malformed(detail=f"bad bits {bits!r}")
    if not _RESOURCE_RE.match(resource) or not _EXT_RE.match(ext):
        raise Malformed(detail="bad resource or ext")
    if not _FIELD_RE.match(rand) or not _FIELD_RE.match(counter):
        raise Malformed(detail="bad rand or counter")
    return Stamp(text, int(bits), date, parse_date(date), resource, ext, rand, counter)


def zero_bits(digest: bytes) -> int:
    """Number of leading zero bits of ``digest``."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def check(
    text: str,
    *,
    resource: str,
    now: float,
    min_bits: int = 20,
    max_age: float = DEFAULT_MAX_AGE,
    skew: float = DEFAULT_SKEW,
) -> HashcashAttestation:
    """All stateless checks of a stamp: syntax, claim >= ``min_bits``, work,
    date window, resource. Raises VerificationError (see module doc)."""
    s = parse(text)
    if s.bits < min_bits:
        raise VerificationError("insufficient_work", f"claims {s.bits} bits < {min_bits}")
    digest = hashlib.sha1(text.encode("ascii")).digest()
    found = zero_bits(digest)
    if found < s.bits:
        raise VerificationError("insufficient_work", f"{found} zero bits < claimed {s.bits}")
    if s.timestamp > now + skew:
        raise VerificationError("not_yet_valid", f"dated {s.date}, in the future")
    if now - s.timestamp > max_age:
        raise VerificationError("expired", f"dated {s.date}, older than {max_age}s")
    if s.resource != resource:
        raise VerificationError("wrong_resource", f"{s.resource!r} != {resource!r}")
    ttl = max(1.0, s.timestamp + max_age - now + skew)
    spend = Spend("hashcash", digest.hex(), ttl, detail="stamp already spent")
    return HashcashAttestation(s.resource, found, s.timestamp, digest.hex(), spend)


def mint(
    resource: str, bits: int, now: float, *, rand: str = "", date_format: str = "%y%m%d", ext: str = ""
) -> tuple[str, int]:
    """Reference minter (tests, client): return (stamp, hashes tried)."""
    date = time.strftime(date_format, time.gmtime(now))
    rand = rand or base64.b64encode(os.urandom(12)).decode()
    prefix = f"1:{bits}:{date}:{resource}:{ext}:{rand}:"
    n = 0
    while True:
        n += 1
        stamp = prefix + format(n, "x")
        if zero_bits(hashlib.sha1(stamp.encode()).digest()) >= bits:
            return stamp, n


def way_out(resource: str, bits: int, max_age: float = DEFAULT_MAX_AGE) -> dict[str, object]:
    """The ``hashcash`` entry of a 402 body's ``ways_out`` (format: ``gateway/client.py``)."""
    return {
        "type": "hashcash",
        "version": 1,
        "resource": resource,
        "bits": bits,
        "max_age": int(max_age),
        "header": "X-Hashcash",
    }
