"""Classification: which class a client belongs to, and how suspicious it looks.

:func:`classify` takes the attestations earlier stages produced (a list of
``(class, subject)`` pairs: session, World ID, zkLogin, Web Bot Auth, x402...)
and keeps the strongest (human > account > backed-agent > verified-agent > agent
> unknown).
A client with no attestation is ``unknown`` unless its User-Agent declares a
bot (curl, python-requests, GPTBot, ClaudeBot...), which makes it ``agent``:
a declared bot is honest about being automated, and agents pay or work.

Heuristic *weight* (fed to :meth:`policies.engine.Policy.match`) is only added
for clients without attestations: a User-Agent claiming a browser but missing
the headers every browser sends (Accept, Accept-Language, Sec-Fetch-*) earns
weight per missing header; an empty User-Agent earns weight too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

RANK = {"human": 5, "account": 4, "backed-agent": 3, "verified-agent": 2, "agent": 1, "unknown": 0}
# Named clients and crawlers; then any product token ending in bot/spider/crawler.
BOT_UA = re.compile(
    r"\b(?:curl|wget|python-requests|python-urllib|python-httpx|aiohttp|httpie|go-http-client"
    r"|okhttp|java/|apache-httpclient|node-fetch|axios|undici|libwww-perl|scrapy|colly"
    r"|chatgpt-user|oai-searchbot|claude-user|anthropic-ai|perplexity-user|bytespider"
    r"|facebookexternalhit|meta-externalagent|diffbot|img2dataset)"
)
_GENERIC_BOT = re.compile(r"(?:bot|spider|crawler)\b")
_TOKEN_TAIL = re.compile(r"[a-z0-9_-]*\Z")  # both applied to the lower-cased UA: (?i) is 4x slower
BROWSER_UA = re.compile(r"Mozilla/5\.0 \(")
BROWSER_HEADERS = ("accept", "accept-language", "sec-fetch-mode", "sec-fetch-site")


@dataclass(frozen=True, slots=True)
class Classification:
    """Class, pseudonymous subject (None when unknown), heuristic weight and why."""

    klass: str
    subject: str | None
    weight: int = 0
    reasons: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Heuristics:
    """Weights for the no-evidence heuristics (configurable)."""

    missing_browser_header: int = 5
    empty_user_agent: int = 10


def strongest(attestations: Iterable[tuple[str, str]]) -> tuple[str, str] | None:
    """The highest-ranked (class, subject); ties keep the first. Raises
    ValueError for an unknown class (a bug in the stage that produced it)."""
    best: tuple[str, str] | None = None
    for klass, subject in attestations:
        if klass not in RANK:
            raise ValueError(f"unknown class {klass!r}")
        if best is None or RANK[klass] > RANK[best[0]]:
            best = (klass, subject)
    return best


def bot_token(user_agent: str) -> str | None:
    """The bot product token a User-Agent declares (lower-case), or None."""
    low = user_agent.lower()
    m = BOT_UA.search(low)
    if m is not None:
        return m.group(0).rstrip("/")
    g = _GENERIC_BOT.search(low)
    if g is None:
        return None
    head = _TOKEN_TAIL.search(low, 0, g.start())
    return low[head.start() if head else g.start() : g.end()]


def classify(
    attestations: Iterable[tuple[str, str]],
    user_agent: str,
    headers: Mapping[str, str],
    h: Heuristics = Heuristics(),
) -> Classification:
    """Pick the client's class; add heuristic weight only without evidence.

    ``headers`` answers ``get()`` for lower-case names.
    """
    best = strongest(attestations)
    if best is not None and best[0] != "unknown":
        return Classification(best[0], best[1])
    token = bot_token(user_agent)
    if token is not None:
        return Classification("agent", None, 0, (f"declared-bot:{token}",))
    weight = 0
    reasons: list[str] = []
    if not user_agent.strip():
        weight += h.empty_user_agent
        reasons.append("empty-user-agent")
    elif BROWSER_UA.match(user_agent):
        for name in BROWSER_HEADERS:
            if headers.get(name) is None:
                weight += h.missing_browser_header
                reasons.append(f"browser-without:{name}")
    return Classification("unknown", None, weight, tuple(reasons))
