"""Server-issued proof-of-work puzzles: stateless, MAC-signed, spend-once.

Challenge wire format (ASCII, URL-, header- and cookie-safe, no ``:``)::

    pz1.<kid>.<payload>.<mac>

``kid`` names the MAC key ([A-Za-z0-9_-]{1,32}); ``payload`` is base64url (no
padding) of compact JSON with the fields

    n  client network the challenge is bound to, e.g. "203.0.113.0/24" or
       "2001:db8:1:2::/64" (a prefix, never the exact address: dual-stack and
       NAT clients do not loop)
    s  route scope (the policy rule's route label), e.g. "api"
    b  difficulty: leading zero bits required of each sub-solution
    k  number of sub-solutions (1 = classic; k > 1 = bounded variance)
    x  expiry, unix seconds
    r  16 random bytes, base64url (makes every challenge unique)

``mac`` is base64url(HMAC-SHA256(keys[kid], "pz1.<kid>.<payload>")). Several
keys are accepted (rotation), one signs.

Solution. A nonce is 1..32 characters of [A-Za-z0-9_-] (clients use decimal
counters). With k = 1 the nonce must make ``SHA-256(challenge ‖ nonce)`` start
with ``b`` zero bits. With k > 1, sub-solution j (0-based) is a nonce such that
``SHA-256(challenge ‖ "." ‖ j ‖ "." ‖ nonce_j)`` has ``b`` zero bits; expected
work is k·2^b hashes with a much smaller variance than one 2^(b+log2 k) search.

Presenting a solution (either header; ``:`` separates, ``,`` joins k nonces)::

    PoP-Puzzle: pz1.k1.eyJ...Q.3q2...:48213
    Authorization: PoP-Puzzle pz1.k1.eyJ...Q.3q2...:48213

or the JSON body ``{"solution": "<same value>", "return_to": "/path"}`` posted
to ``/.well-known/popgate/puzzle`` (the browser page does that).

Verification: one MAC (constant-time compare) before the payload is decoded,
then expiry, network, scope, difficulty, k hashes. No store here: a checked
challenge comes with its :class:`~verifiers.spend.Spend` (:func:`spend_of`:
``pg:{puzzle:<mac>}`` until expiry, limit 1) and the caller (the gateway, or
``popgate verify``) claims it atomically: one challenge buys one pass,
however many valid nonces exist for it.

Reasons raised (``VerificationError.reason``): ``malformed``, ``unknown_key``,
``bad_mac``, ``expired``, ``wrong_network``, ``wrong_resource`` (scope),
``insufficient_work`` (bits below the route's current floor, or a nonce that
does not reach ``b``), ``replayed``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.net import IPAddress, network_of
from popgate.verifiers.spend import Spend

PREFIX = "pz1"
MAX_CHALLENGE_LEN = 512
MAX_SUBS = 16
MAX_BITS = 40
NONCE_RE = re.compile(r"[A-Za-z0-9_-]{1,32}\Z")
KID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}\Z")
SCOPE_RE = re.compile(r"[A-Za-z0-9_.:/*-]{1,64}\Z")


@dataclass(frozen=True, slots=True)
class PuzzleKeys:
    """MAC keys by key id; ``signing_kid`` signs new challenges."""

    keys: Mapping[str, bytes]
    signing_kid: str

    def __post_init__(self) -> None:
        if self.signing_kid not in self.keys:
            raise ValueError(f"signing kid {self.signing_kid!r} not among the keys")
        for kid, k in self.keys.items():
            if not KID_RE.match(kid):
                raise ValueError(f"bad key id {kid!r}")
            if len(k) < 16:
                raise ValueError(f"key {kid!r} shorter than 16 bytes")


@dataclass(frozen=True, slots=True)
class Challenge:
    """A decoded, MAC-checked challenge (or a freshly issued one)."""

    wire: str
    kid: str
    network: str
    scope: str
    bits: int
    subs: int
    expires: int
    mac: str


@dataclass(frozen=True, slots=True)
class PuzzleAttestation:
    """What a solved puzzle proves: work for ``scope`` from ``network``,
    once ``spend`` is claimed."""

    network: str
    scope: str
    bits: int
    subs: int
    expires: int
    spend: Spend


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(key: bytes, signed: str) -> str:
    return _b64e(hmac.digest(key, signed.encode("ascii"), "sha256"))


def issue(
    keys: PuzzleKeys,
    *,
    network: str,
    scope: str,
    bits: int,
    now: float,
    ttl: int = 300,
    subs: int = 1,
    rand: bytes | None = None,
    trusted_network: bool = False,
) -> Challenge:
    """Sign a new challenge for ``network`` (see :func:`network_of`) and ``scope``.

    ``trusted_network`` skips re-parsing a network string the gateway computed
    itself (the hot path of every 402). Raises ValueError on out-of-range
    parameters (a programming error).
    """
    if not 0 <= bits <= MAX_BITS or not 1 <= subs <= MAX_SUBS or ttl <= 0:
        raise ValueError("bits, subs or ttl out of range")
    if not SCOPE_RE.match(scope):
        raise ValueError(f"bad scope {scope!r}")
    if not trusted_network:
        ipaddress.ip_network(network)  # raises ValueError when not a network
    body = {
        "n": network,
        "s": scope,
        "b": bits,
        "k": subs,
        "x": (expires := int(now) + ttl),
        "r": _b64e(rand if rand is not None else os.urandom(16)),
    }
    payload = _b64e(json.dumps(body, separators=(",", ":")).encode())
    kid = keys.signing_kid
    signed = f"{PREFIX}.{kid}.{payload}"
    mac = _mac(keys.keys[kid], signed)
    return Challenge(f"{signed}.{mac}", kid, network, scope, bits, subs, expires, mac)


def parse_solution(value: str) -> tuple[str, tuple[str, ...]]:
    """Split a ``PoP-Puzzle`` header value (or the part after
    ``Authorization: PoP-Puzzle``) into (challenge, nonces). Pure; raises
    :class:`Malformed`."""
    if len(value) > MAX_CHALLENGE_LEN + MAX_SUBS * 33:
        raise Malformed(detail="solution too long")
    challenge, sep, rest = value.strip().partition(":")
    if not sep or not challenge.startswith(PREFIX + "."):
        raise Malformed(detail="expected <challenge>:<nonce>")
    nonces = tuple(rest.split(","))
    if len(nonces) > MAX_SUBS or not all(NONCE_RE.match(n) for n in nonces):
        raise Malformed(detail="bad nonce list")
    return challenge, nonces


def decode(keys: PuzzleKeys, wire: str) -> Challenge:
    """Check the MAC of ``wire`` and decode it. Does not check expiry or binding.

    Raises Malformed, ``unknown_key`` or ``bad_mac``.
    """
    if len(wire) > MAX_CHALLENGE_LEN:
        raise Malformed(detail="challenge too long")
    parts = wire.split(".")
    if len(parts) != 4 or parts[0] != PREFIX:
        raise Malformed(detail="expected pz1.<kid>.<payload>.<mac>")
    _, kid, payload, mac = parts
    key = keys.keys.get(kid)
    if key is None:
        raise VerificationError("unknown_key", f"kid {kid!r}")
    expected = _mac(key, f"{PREFIX}.{kid}.{payload}")
    if not hmac.compare_digest(expected.encode(), mac.encode("ascii", "replace")):
        raise VerificationError("bad_mac")
    try:
        body = json.loads(_b64d(payload))
        c = Challenge(
            wire, kid, str(body["n"]), str(body["s"]), int(body["b"]), int(body["k"]), int(body["x"]), mac
        )
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:  # signed by us: should not happen
        raise Malformed(detail=f"payload: {exc}") from None
    return c


def _zero_bits_ok(digest: bytes, bits: int) -> bool:
    return int.from_bytes(digest[:8], "big") >> (64 - bits) == 0  # bits <= MAX_BITS < 64


def work_ok(wire: str, nonces: tuple[str, ...], bits: int) -> bool:
    """True when every sub-solution reaches ``bits`` zero bits (see module doc)."""
    if len(nonces) == 1:
        return _zero_bits_ok(hashlib.sha256((wire + nonces[0]).encode()).digest(), bits)
    return all(
        _zero_bits_ok(hashlib.sha256(f"{wire}.{j}.{n}".encode()).digest(), bits) for j, n in enumerate(nonces)
    )


def check(
    keys: PuzzleKeys,
    wire: str,
    nonces: tuple[str, ...],
    *,
    now: float,
    client_ip: IPAddress | str | None = None,
    network: str | None = None,
    scope: str | None = None,
    min_bits: int = 0,
    v4_prefix: int = 24,
    v6_prefix: int = 64,
) -> Challenge:
    """Every stateless check (MAC, expiry, binding, work); no store.

    ``client_ip`` (mapped to its prefix) or ``network`` must equal the bound
    network; ``scope`` (when given) the bound scope; the challenge's bits must
    be at least ``min_bits``. Raises VerificationError (see module doc).
    """
    c = decode(keys, wire)
    if now >= c.expires:
        raise VerificationError("expired", f"expired at {c.expires}")
    if client_ip is not None:
        network = network_of(client_ip, v4_prefix, v6_prefix)
    elif network is not None:
        network = str(ipaddress.ip_network(network, strict=False))  # ValueError when garbage
    if network is not None and network != c.network:
        raise VerificationError("wrong_network", f"{network} != {c.network}")
    if scope is not None and scope != c.scope:
        raise VerificationError("wrong_resource", f"scope {scope!r} != {c.scope!r}")
    if c.bits < min_bits:
        raise VerificationError("insufficient_work", f"challenge bits {c.bits} < floor {min_bits}")
    if len(nonces) != c.subs:
        raise VerificationError("insufficient_work", f"{len(nonces)} sub-solutions, need {c.subs}")
    if not work_ok(wire, nonces, c.bits):
        raise VerificationError("insufficient_work", "hash above target")
    return c


def spend_of(c: Challenge, now: float) -> Spend:
    """What a checked challenge leaves to spend: its MAC, once, until it expires."""
    return Spend("puzzle", c.mac, max(1.0, c.expires - now), detail="challenge already spent")


def verify(
    keys: PuzzleKeys,
    solution: str,
    *,
    now: float,
    client_ip: IPAddress | str | None = None,
    network: str | None = None,
    scope: str | None = None,
    min_bits: int = 0,
) -> PuzzleAttestation:
    """Check a ``PoP-Puzzle`` value; the attestation's ``spend`` is what the
    caller must claim once (``replayed`` when the claim is refused).

    Raises VerificationError; ValueError without ``client_ip`` or ``network``.
    """
    if client_ip is None and network is None:
        raise ValueError("verify needs client_ip or network: a challenge is always bound")
    wire, nonces = parse_solution(solution)
    c = check(
        keys, wire, nonces, now=now, client_ip=client_ip, network=network, scope=scope, min_bits=min_bits
    )
    return PuzzleAttestation(c.network, c.scope, c.bits, c.subs, c.expires, spend_of(c, now))


def solve(wire: str, bits: int, subs: int = 1, start: int = 0) -> tuple[tuple[str, ...], int]:
    """Reference solver (tests, CLI): return (nonces, hashes tried)."""
    nonces: list[str] = []
    tried = 0
    for j in range(subs):
        prefix = (wire if subs == 1 else f"{wire}.{j}.").encode()
        n = start
        while True:
            tried += 1
            if _zero_bits_ok(hashlib.sha256(prefix + str(n).encode()).digest(), bits):
                nonces.append(str(n))
                break
            n += 1
    return tuple(nonces), tried


def way_out(c: Challenge, submit: str = "/.well-known/popgate/puzzle") -> dict[str, object]:
    """The ``puzzle`` entry of a 402 body's ``ways_out`` (format: ``gateway/client.py``)."""
    return {
        "type": "puzzle",
        "algorithm": "sha256-leading-zero-bits",
        "challenge": c.wire,
        "bits": c.bits,
        "subs": c.subs,
        "expires": c.expires,
        "header": "PoP-Puzzle",
        "submit": submit,
    }
