"""GCRA rate limiting (generic cell rate algorithm), per subject or per network.

State per key is one number, the *theoretical arrival time* (TAT). For a rate
of one request every ``T`` seconds with ``burst`` extra requests allowed at
once, a request costing ``cost`` is allowed when

    new_tat = max(tat, now) + T·cost      and      new_tat - now <= T·(burst + 1)

and then ``tat := new_tat`` (kept until ``new_tat``; an absent key means
``tat = now``). A refused request changes nothing and may retry after
``new_tat - now - T·(burst + 1)`` seconds.

:func:`gcra` is the pure step; the memory and SQLite stores run it on the
state they hold, the Redis store runs the same math as one Lua script
(``Store.gcra``).

Keys: :func:`subject_key` and :func:`network_key` (IPv4 /24, IPv6 /64 by
default) give store keys in the ``pg:{gcra:...}`` namespace.
"""

from __future__ import annotations

from dataclasses import dataclass

from popgate.verifiers.net import IPAddress, network_of
from popgate.verifiers.spend import key


@dataclass(frozen=True, slots=True)
class GcraResult:
    """``allowed``; the TAT now stored; seconds until a retry may pass (0 when
    allowed); requests still allowed right now after this one."""

    allowed: bool
    tat: float
    retry_after: float
    remaining: int


def gcra(tat: float | None, now: float, interval: float, burst: int, cost: int = 1) -> GcraResult:
    """One GCRA step. ``interval`` = T (seconds per request) > 0, ``burst`` >= 0."""
    base = now if tat is None or tat < now else tat
    new_tat = base + interval * cost
    limit = interval * (burst + 1)
    diff = new_tat - now
    eps = interval * 1e-6  # absorbs float rounding of unix-time seconds (ulp ~ 2e-7 s)
    if diff <= limit + eps:
        return GcraResult(True, new_tat, 0.0, int((limit - diff + eps) / interval))
    return GcraResult(False, base, diff - limit, 0)


def subject_key(subject: str) -> str:
    return key("gcra", f"s:{subject}")


def network_key(ip: IPAddress | str, v4_prefix: int = 24, v6_prefix: int = 64) -> str:
    return key("gcra", f"n:{network_of(ip, v4_prefix, v6_prefix)}")
