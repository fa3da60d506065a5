"""Counters the users keep beside locust's own statistics: attack attempts and
breaches, work spent by puzzle solvers, fees paid. One :class:`Tally` per
locust Environment (``environment.popgate``), read by the gate."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Tally:
    attempts: Counter[str] = field(default_factory=Counter)  # attack kind -> tries
    breaches: Counter[str] = field(default_factory=Counter)  # attack or check -> successes
    breach_examples: dict[str, str] = field(default_factory=dict)
    work: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    bits: Counter[int] = field(default_factory=Counter)  # puzzle bits seen by solvers
    paid: Counter[str] = field(default_factory=Counter)  # rail -> requests charged
    paid_accounts: Counter[str] = field(default_factory=Counter)  # credit account -> requests
    uncertain: Counter[str] = field(default_factory=Counter)  # rail -> requests with no answer
    notes: Counter[str] = field(default_factory=Counter)

    def breach(self, kind: str, detail: str) -> None:
        self.breaches[kind] += 1
        self.breach_examples.setdefault(kind, detail[:300])

    def to_wire(self) -> dict[str, Any]:
        """The raw counters, for a locust worker to send its master (:meth:`merge`)."""
        return {
            "attempts": dict(self.attempts),
            "breaches": dict(self.breaches),
            "breach_examples": dict(self.breach_examples),
            "work": dict(self.work),
            "bits": {str(k): v for k, v in self.bits.items()},
            "paid": dict(self.paid),
            "paid_accounts": dict(self.paid_accounts),
            "uncertain": dict(self.uncertain),
            "notes": dict(self.notes),
        }

    def merge(self, wire: dict[str, Any]) -> None:
        """Add a worker's counters (:meth:`to_wire`) to these."""
        for name in ("attempts", "breaches", "paid", "paid_accounts", "uncertain", "notes"):
            getattr(self, name).update(wire.get(name) or {})
        for k, v in (wire.get("breach_examples") or {}).items():
            self.breach_examples.setdefault(k, v)
        for k, v in (wire.get("work") or {}).items():
            self.work[k] += float(v)
        self.bits.update({int(k): v for k, v in (wire.get("bits") or {}).items()})

    def as_dict(self) -> dict[str, Any]:
        w = self.work
        through = w.get("requests_through", 0.0)
        return {
            "attacks": {
                k: {"attempts": self.attempts[k], "succeeded": self.breaches[k]}
                for k in sorted(set(self.attempts) | set(self.breaches))
            },
            "breaches": dict(self.breaches),
            "breach_examples": self.breach_examples,
            "puzzle": {
                **dict(w),
                "bits_seen": {str(b): n for b, n in sorted(self.bits.items())},
                "hashes_per_request": w.get("hashes", 0.0) / through if through else None,
                "solve_ms_per_request": 1000 * w.get("seconds", 0.0) / through if through else None,
            },
            "paid": dict(self.paid),
            "paid_accounts": dict(self.paid_accounts),
            "uncertain": dict(self.uncertain),
            "notes": dict(self.notes),
        }


def tally_of(environment: Any) -> Tally:
    t = getattr(environment, "popgate", None)
    if t is None:
        t = environment.popgate = Tally()
    return t
