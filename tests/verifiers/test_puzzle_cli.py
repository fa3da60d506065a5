"""`popgate verify puzzle` and `popgate verify hashcash` adapters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from popgate.gateway.cli.verify import VerifyEnv
from popgate.gateway.stores.memory import MemoryStore
from popgate.verifiers import puzzle
from popgate.verifiers.cli import hashcash as hashcash_cli
from popgate.verifiers.cli import puzzle as puzzle_cli
from popgate.verifiers.errors import VerificationError

NOW = 1_790_000_000.0
STAMPS = Path(__file__).parent.parent / "fixtures" / "hashcash" / "stamps.tsv"


@dataclass
class Cfg:
    puzzle_keys: dict[str, bytes]
    puzzle_signing_kid: str


DEFAULT_CFG = Cfg({"k1": b"k" * 32}, "k1")


def env(config: Any = DEFAULT_CFG) -> VerifyEnv:
    return VerifyEnv(MemoryStore(), config, NOW)


async def test_puzzle_case_valid_then_replayed() -> None:
    """A solved case passes with its binding as output; the same case again is replayed."""
    e = env()
    c = puzzle.issue(
        puzzle_cli.keys_from_config(e.config), network="203.0.113.0/24", scope="api", bits=6, now=NOW
    )
    nonces, _ = puzzle.solve(c.wire, 6)
    case = {"challenge": c.wire, "solution": nonces[0], "now": NOW + 5, "network": "203.0.113.0/24"}
    out = await puzzle_cli.check(case, e)
    assert out == {
        "network": "203.0.113.0/24",
        "scope": "api",
        "bits": 6,
        "subs": 1,
        "expires": int(NOW) + 300,
    }
    with pytest.raises(VerificationError) as ex:
        await puzzle_cli.check(case, e)
    assert ex.value.reason == "replayed"


@pytest.mark.parametrize(
    "patch, expected",
    [
        ({"network": "198.51.100.0/24"}, "wrong_network"),
        ({"now": NOW + 301}, "expired"),
        ({"solution": "x y"}, "malformed"),
        ({"network": "nonsense"}, "malformed"),
    ],
)
async def test_puzzle_case_failures(patch: dict[str, Any], expected: str) -> None:
    e = env()
    c = puzzle.issue(
        puzzle_cli.keys_from_config(e.config), network="203.0.113.0/24", scope="api", bits=2, now=NOW
    )
    nonces, _ = puzzle.solve(c.wire, 2)
    case = {"challenge": c.wire, "solution": nonces[0], "now": NOW, "network": "203.0.113.0/24", **patch}
    with pytest.raises(VerificationError) as ex:
        await puzzle_cli.check(case, e)
    assert ex.value.reason == expected


async def test_puzzle_without_config_is_no_keys() -> None:
    with pytest.raises(VerificationError) as ex:
        await puzzle_cli.check(
            {"challenge": "pz1.a.b.c", "solution": "1", "network": "10.0.0.0/24"}, env(None)
        )
    assert ex.value.reason == "no_keys"


async def test_hashcash_cases() -> None:
    """Tool-minted stamps pass once; a replay and a wrong resource fail."""
    stamp, resource, bits, _ = STAMPS.read_text().splitlines()[0].split("\t")
    e = env(None)
    now = 1795219200  # 2026-11-21T00:00:00Z
    case = {"stamp": stamp, "resource": resource, "now": now, "min_bits": int(bits), "max_age_seconds": 86400}
    out = await hashcash_cli.check(case, e)
    assert out["bits"] >= int(bits) and out["resource"] == resource
    with pytest.raises(VerificationError) as ex:
        await hashcash_cli.check(case, e)
    assert ex.value.reason == "replayed"
    with pytest.raises(VerificationError) as ex:
        await hashcash_cli.check({**case, "resource": "other"}, env(None))
    assert ex.value.reason == "wrong_resource"
    with pytest.raises(VerificationError) as ex:
        await hashcash_cli.check({**case, "now": now + 3 * 86400}, env(None))
    assert ex.value.reason == "expired"
    with pytest.raises(VerificationError) as ex:
        await hashcash_cli.check({"resource": "x"}, env(None))
    assert ex.value.reason == "malformed"
