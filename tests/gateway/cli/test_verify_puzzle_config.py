"""``popgate verify puzzle --config F`` with a real config's [puzzle] keys,
through a subprocess (JSON Lines)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from popgate.gateway.ops.config import load_config
from popgate.verifiers import puzzle
from tests.gateway.schemes.puzzle_support import puzzle_extra
from tests.support.servers import ROOT, write_config


def test_verify_puzzle_cli_uses_config_keys(tmp_path):
    """Valid, replayed, wrong-network and foreign-key cases, in order, one JSON line each."""
    cfg = write_config(tmp_path, "http://127.0.0.1:9", extra=puzzle_extra(tmp_path))
    config = load_config(cfg)
    assert config.puzzle_signing_kid == "p1" and len(config.puzzle_keys["p1"]) >= 32
    keys = puzzle.PuzzleKeys(config.puzzle_keys, config.puzzle_signing_kid)
    now = time.time()
    c = puzzle.issue(keys, network="203.0.113.0/24", scope="api", bits=8, now=now)
    nonces, _ = puzzle.solve(c.wire, 8)
    other = puzzle.issue(
        puzzle.PuzzleKeys({"p1": b"x" * 32}, "p1"), network="203.0.113.0/24", scope="api", bits=8, now=now
    )
    onon, _ = puzzle.solve(other.wire, 8)
    c2 = puzzle.issue(keys, network="203.0.113.0/24", scope="api", bits=8, now=now)
    n2, _ = puzzle.solve(c2.wire, 8)
    cases = [
        {"challenge": c.wire, "solution": nonces[0], "network": "203.0.113.0/24", "scope": "api"},
        {"challenge": c.wire, "solution": nonces[0], "network": "203.0.113.0/24"},
        {"challenge": c2.wire, "solution": n2[0], "client_ip": "198.51.100.4"},
        {"challenge": other.wire, "solution": onon[0], "network": "203.0.113.0/24"},
        {"challenge": c2.wire, "solution": n2[0], "client_ip": "203.0.113.200", "min_bits": 12},
    ]
    out = subprocess.run(
        [sys.executable, "-m", "popgate.gateway", "verify", "puzzle", "--config", str(cfg)],
        input="\n".join(json.dumps(x) for x in cases) + "\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    ).stdout
    results = [json.loads(line) for line in out.splitlines()]
    assert results[0]["valid"] is True and results[0]["scope"] == "api" and results[0]["bits"] == 8
    assert [r["reason"] for r in results] == [
        "ok",
        "replayed",
        "wrong_network",
        "bad_mac",
        "insufficient_work",
    ]


def test_verify_puzzle_cli_without_puzzle_table_reports_no_keys(tmp_path):
    """A config without [puzzle] gives reason no_keys for every case (exit status 0)."""
    cfg = write_config(tmp_path, "http://127.0.0.1:9")
    out = subprocess.run(
        [sys.executable, "-m", "popgate.gateway", "verify", "puzzle", "--config", str(cfg)],
        input='{"challenge": "pz1.a.b.c", "solution": "1", "network": "10.0.0.0/24"}\n',
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=True,
    ).stdout
    assert json.loads(out) == {"valid": False, "reason": "no_keys"}
