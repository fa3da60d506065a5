"""``popgate verify SCHEME``: check evidence cases given as JSON Lines.

Reads one JSON object per line on stdin and writes one JSON line per case to
stdout, in order, each with ``valid`` and ``reason`` (``ok`` when valid) and
the scheme's extra fields. All lines of one run share one fresh in-memory
store, so a replay of an earlier line is caught. A malformed line gives
``{"valid": false, "reason": "malformed"}``. Exit status: 0 when every line
was processed, 2 on a usage error (unknown scheme, bad --config).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import IO, Any

from popgate.gateway.ops.config import ConfigError, load_config
from popgate.gateway.stores.base import Spend, spend
from popgate.gateway.stores.memory import MemoryStore
from popgate.verifiers.errors import VerificationError

SCHEMES = (
    "session",
    "groth16",
    "worldid",
    "zklogin",
    "zklogin-nonce",
    "zklogin-proof",
    "poseidon",
    "webbotauth",
    "hashcash",
    "puzzle",
    "x402",
    "privatepass",
    "delegation",
    "x402-batch",
    "x402-upto",
)


@dataclass
class VerifyEnv:
    """What a scheme's ``check`` gets: a shared store, the config, a clock.

    Verifiers return what to spend; a check spends it with :meth:`spend`.
    """

    store: MemoryStore
    config: Any
    now: float

    async def spend(self, item: Spend) -> None:
        """Claim ``item`` in the run's store; ``item.refused()`` when spent before."""
        await spend(self.store, item)


def load_checker(scheme: str) -> Any:
    """Return ``verifiers.cli.<scheme>.check``; raise LookupError if unknown."""
    if scheme not in SCHEMES:
        raise LookupError(scheme)
    try:
        module = importlib.import_module(f"popgate.verifiers.cli.{scheme.replace('-', '_')}")
    except ModuleNotFoundError as exc:
        raise LookupError(scheme) from exc
    return module.check


async def run_cases(check: Any, config: Any, lines: IO[str], out: IO[str]) -> None:
    env = VerifyEnv(store=MemoryStore(clock=time.time), config=config, now=time.time())
    for line in lines:
        if not line.strip():
            continue
        result: dict[str, Any]
        try:
            case = json.loads(line)
            if not isinstance(case, dict):
                raise ValueError("case is not an object")
            env.now = float(case.get("now", time.time()))
            extra = await check(case, env)
            result = {"valid": True, "reason": "ok", **(extra or {})}
        except VerificationError as exc:
            result = {"valid": False, "reason": exc.reason, **getattr(exc, "fields", {})}
        except (ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError) as exc:
            logging.getLogger("popgate.verify").debug("malformed case: %s", exc)
            result = {"valid": False, "reason": "malformed"}
        except RecursionError:
            result = {"valid": False, "reason": "malformed"}
        out.write(json.dumps(result) + "\n")
        out.flush()


def main(scheme: str, config_path: str | None) -> int:
    try:
        check = load_checker(scheme)
    except LookupError:
        print(f"popgate verify: unknown scheme {scheme!r}; one of: {', '.join(SCHEMES)}", file=sys.stderr)
        return 2
    config = None
    if config_path is not None:
        try:
            config = load_config(config_path, {"server.upstream": "http://127.0.0.1:9"})
        except ConfigError as exc:
            print(f"popgate verify: {exc}", file=sys.stderr)
            return 2
    asyncio.run(run_cases(check, config, sys.stdin, sys.stdout))
    return 0
