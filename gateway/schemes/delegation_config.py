"""``[delegation]`` settings, validated once at start-up (every problem with its key path).

```toml
[delegation]
from_classes = ["human"]     # sessions that may delegate (never a delegation itself)
max_ttl = 86400              # longest delegation, seconds (and never past the human's session)
daily_quota = 1000           # requests per human per UTC day, all their agents together (0: none)
revocation_check = 5         # seconds: a revoked delegation stops working within this
signature_window = 300       # agent request signatures: created within, expires at most this ahead
clock_skew = 30
require_nonce = false        # agents must sign a nonce (then spent once)
rate_limit = 30              # delegations per human per rate_window seconds
rate_window = 3600
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from popgate.gateway.ops import validation as pc

_NUMBERS: dict[str, tuple[int, int, int]] = {
    "max_ttl": (86400, 60, 30 * 86400),
    "daily_quota": (1000, 0, 10**9),
    "revocation_check": (5, 0, 3600),
    "signature_window": (300, 1, 3600),
    "clock_skew": (30, 0, 600),
    "rate_limit": (30, 1, 10**6),
    "rate_window": (3600, 1, 86400),
}
DELEGATING = ("human", "account", "verified-agent")


@dataclass(frozen=True, slots=True)
class DelegationSettings:
    from_classes: frozenset[str] = frozenset({"human"})
    max_ttl: int = 86400
    daily_quota: int = 1000
    revocation_check: int = 5
    signature_window: int = 300
    clock_skew: int = 30
    require_nonce: bool = False
    rate_limit: int = 30
    rate_window: int = 3600


def collect_settings(c: pc.Collector, raw: Any) -> DelegationSettings | None:
    """Validate ``[delegation]``, recording every problem in ``c``; None when there were any."""
    before = len(c.problems)
    t = c.table("delegation", {"delegation": raw})
    c.unknown_keys("delegation", t, {"from_classes", "require_nonce", *_NUMBERS})
    nums: dict[str, int] = {}
    for name, (default, lo, hi) in _NUMBERS.items():
        v = c.number(f"delegation.{name}", t.get(name, default), lo=lo, hi=hi, integer=True)
        nums[name] = int(v) if v is not None else default
    classes = t.get("from_classes", ["human"])
    if not isinstance(classes, list) or not classes or not all(k in DELEGATING for k in classes):
        c.problem("delegation.from_classes", f"expected a non-empty list of {', '.join(DELEGATING)}")
        classes = ["human"]
    nonce = t.get("require_nonce", False)
    if not isinstance(nonce, bool):
        c.problem("delegation.require_nonce", f"expected true or false, got {nonce!r}")
    if len(c.problems) > before:
        return None
    return DelegationSettings(from_classes=frozenset(classes), require_nonce=bool(nonce), **nums)
