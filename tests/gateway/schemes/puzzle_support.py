"""Shared set-up for the puzzle/policy gateway tests: config text and helpers."""

from __future__ import annotations

import os
from pathlib import Path

POLICY = """
[default]
human = "allow"
account = "allow"
verified-agent = "allow"
agent = { kind = "challenge", ways = ["puzzle", "hashcash"], min_bits = 8 }
unknown = { kind = "challenge", ways = ["puzzle", "hashcash"], min_bits = 8 }

[[rules]]
include = "(snippets)/keep-internet-working.toml"
[[rules]]
include = "(snippets)/health.toml"
[[rules]]
include = "(snippets)/deny-pathological.toml"

[[rules]]
name = "v1"
path = ["/v1", "/v1/**"]
[rules.actions]
unknown = { kind = "challenge", ways = ["hashcash", "puzzle"], min_bits = 16 }
agent = { kind = "challenge", ways = ["hashcash", "puzzle"], min_bits = 16 }

[[rules]]
name = "feed"
path = "/feed"
action = { kind = "throttle", rate = "2/min", burst = 0, per = "network" }

[[rules]]
name = "open"
path = "/open/**"
action = "allow"
"""


def puzzle_extra(
    tmp: Path,
    *,
    policy: str = POLICY,
    floor: int = 8,
    pressure_bits: int = 0,
    extra: str = "",
    ceiling: int = 22,
) -> str:
    """Config tables: [policy] file, [puzzle] keys, [difficulty] with a low floor and,
    unless asked for, no pressure bits (a loaded test machine's loop lag must not raise
    the bits between a 402 and its answer; pressure has its own tests)."""
    (tmp / "pz").write_bytes(os.urandom(24).hex().encode())
    pol = tmp / "policy.toml"
    pol.write_text(policy)
    return f"""
[policy]
file = "{pol}"
[puzzle]
signing_kid = "p1"
keys = [{{kid = "p1", secret_file = "{tmp / "pz"}"}}]
bits = {floor}
session_budget = 5
session_ttl = 600
[difficulty]
class_floor = {{unknown = {floor}, agent = {floor}}}
ceiling = {ceiling}
pressure_bits = {pressure_bits}
{extra}
"""


def way(body: dict, kind: str) -> dict:
    return next(w for w in body["ways_out"] if w["kind"] == kind)
