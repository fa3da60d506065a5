"""Value types shared by the policy engine and the gateway.

The gateway builds a :class:`RequestView` per request and gets back a
:class:`Match`: the :class:`Action` for the client's class plus the name and
route of the rule that chose it. All are frozen; matches are precomputed at
compile time, so matching allocates nothing of its own beyond the view.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from popgate.verifiers.net import IPAddress

CLASSES: tuple[str, ...] = ("human", "account", "backed-agent", "verified-agent", "agent", "unknown")
KINDS: tuple[str, ...] = ("allow", "challenge", "charge", "throttle", "deny")
WAYS: tuple[str, ...] = ("prove", "puzzle", "hashcash", "pay", "credits")
ATOMIC_PER_USD = 10**6  # prices on the wire: USDC atomic units (6 decimals)

Kind = Literal["allow", "challenge", "charge", "throttle", "deny"]


@dataclass(frozen=True, slots=True)
class Rate:
    """``count`` requests per ``period`` seconds, ``burst`` extra at once, keyed
    ``per`` subject or client network."""

    count: int
    period: float
    burst: int = 0
    per: Literal["subject", "network"] = "subject"

    def __post_init__(self) -> None:
        if self.count < 1 or self.period <= 0 or self.burst < 0:
            raise ValueError("rate needs count >= 1, period > 0, burst >= 0")

    @property
    def interval(self) -> float:
        """Seconds between requests at the steady rate (GCRA's T)."""
        return self.period / self.count


@dataclass(frozen=True, slots=True)
class Action:
    """What to do with a request: ``kind`` plus the parameters that kind uses.

    - ``challenge``: ``ways`` (accepted ways out), ``price`` when ``pay`` is
      among them, ``min_bits`` (difficulty floor for ``puzzle``/``hashcash``);
    - ``charge``: ``price`` (atomic units, 6 decimals), ways ``pay``/``credits``;
    - ``throttle``: ``rate``;
    - ``deny``: ``status``.
    """

    kind: Kind
    ways: tuple[str, ...] = ()
    price: int = 0
    min_bits: int = 0
    rate: Rate | None = None
    status: int = 0


ALLOW = Action("allow")


@dataclass(frozen=True, slots=True)
class Match:
    """The engine's answer: the action and which rule (and route) chose it."""

    action: Action
    rule: str
    route: str


@dataclass(slots=True)
class Trace:
    """How a match was reached, filled in only when asked for (``popgate explain``):
    the heuristic weight, each weigh rule that matched and its weight, the match."""

    heuristic: int = 0
    weighed: list[tuple[str, int]] = field(default_factory=list)
    match: Match | None = None

    @property
    def weight(self) -> int:
        return self.heuristic + sum(w for _, w in self.weighed)


@dataclass(slots=True)  # not frozen: built per request, and a frozen __init__ costs 6× more
class RequestView:
    """The neutral request the engine sees.

    ``path`` is the raw path without query; ``headers`` must answer ``get()``
    for lower-case names (aiohttp's CIMultiDictProxy does; a plain dict must
    have lower-case keys). ``host`` may carry a port. ``declared_agent`` is a
    self-declared or verified agent name (Signature-Agent, bot UA token...).
    """

    host: str
    method: str
    path: str
    query: str
    headers: Mapping[str, str]
    user_agent: str
    client_ip: IPAddress
    declared_agent: str | None = None
