"""402s reused within a short window: a challenge is minted once per key and window.

Only for a network sending ``[overload] challenge_min_rate`` requests/s or more (the
difficulty tracker's estimate): a flood. Ordinary clients, several behind one NAT
included, get a puzzle of their own per 402 as before.

An unverified request costs what its 402 costs, and a flood is mostly those. So
the rendered 402 (headers and body bytes) for one key is kept until the window
(``[overload] challenge_window`` seconds, aligned to the clock) ends, and every
request with that key in the window gets the same bytes. The key holds all that
a 402's content depends on: the client's class and network (the puzzle is MAC-bound
to the network), the policy route, the current puzzle bits (which rise with the
network's request rate and the gateway's load), the reason, HTML or JSON, and the
request's Host and target (the x402 offer names the URL, the HTML page returns to
it). The puzzle itself is minted once per (network, route, bits) and window
(:class:`Windowed` in :class:`gateway.schemes.puzzle.PuzzleOffer`), so a flood of
distinct paths still shares one MAC per network.

What sharing means for replay (THREAT_MODEL.md): a puzzle challenge is still spent
once (its MAC is the spend key), bound to one network and expires as before, at
most one window earlier than a fresh one. Clients of one network that fetch a 402
in the same window get the same puzzle: the first solution spent wins, the others
are refused ``replayed`` and fetch a new one.

A challenge spent (or refused as spent) here bumps its network's *epoch*, part of
both caches' keys: the next 402 for that network mints a fresh puzzle, so a client
that just used one is not handed it again. A puzzle spent through another gateway
sharing the store is only noticed when someone presents it here: until then (at
most one window) this gateway may still hand it out, and its solvers get
``replayed`` and ask again.

Both caches are bounded (``max_entries`` per window: past it, entries are simply
not kept and requests are rendered as before) and cleared when the window turns.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class Windowed(Generic[V]):
    """A dict that empties itself when the clock enters a new window of ``window`` seconds."""

    __slots__ = ("entries", "epochs", "max_entries", "slot", "window")

    def __init__(self, window: float, max_entries: int = 20_000) -> None:
        if window <= 0:
            raise ValueError("window must be positive")
        self.window = window
        self.max_entries = max_entries
        self.slot = -1
        self.entries: dict[Hashable, V] = {}
        self.epochs: dict[Hashable, int] = {}

    def get(self, key: Hashable, now: float) -> V | None:
        slot = int(now // self.window)
        if slot != self.slot:
            self.slot = slot
            self.entries = {}
            self.epochs = {}
            return None
        return self.entries.get(key)

    def epoch(self, tag: Hashable) -> int:
        """How many times ``tag`` (a network) was bumped in this window: part of the keys."""
        return self.epochs.get(tag, 0)

    def bump(self, tag: Hashable) -> None:
        """Retire every entry keyed with ``tag``'s current epoch (all of them when full)."""
        if len(self.epochs) >= self.max_entries:
            self.entries = {}
            self.epochs = {}
        self.epochs[tag] = self.epochs.get(tag, 0) + 1

    def put(self, key: Hashable, value: V) -> None:
        if len(self.entries) < self.max_entries:
            self.entries[key] = value
