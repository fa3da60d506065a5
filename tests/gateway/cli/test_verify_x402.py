"""``popgate verify x402`` as a subprocess speaking JSON Lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.fixtures.x402.cases import DOC
from tests.support.servers import ROOT, write_config


def run(lines: list[dict], *args: str) -> list[dict]:
    out = subprocess.run(
        [sys.executable, "-m", "popgate.gateway", "verify", "x402", *args],
        cwd=ROOT,
        input="".join(json.dumps(c) + "\n" for c in lines),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return [json.loads(line) for line in out.splitlines()]


def test_subprocess_matches_fixture_expectations():
    """Each fixture case gives its expected verdict, in order, one line each."""
    results = run(DOC["cases"])
    assert len(results) == len(DOC["cases"])
    for case, got in zip(DOC["cases"], results):
        exp = case["expect"]
        assert got["valid"] is exp["valid"], case["name"]
        assert got["reason"] == ("ok" if exp["valid"] else exp["reason"]), case["name"]


def test_subprocess_reads_accept_v1_from_config(tmp_path: Path):
    """With a config whose [x402] accept_v1 = false, X-PAYMENT lines are malformed."""
    path = write_config(
        tmp_path,
        "http://127.0.0.1:9",
        extra="""
[x402]
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
facilitator = "http://127.0.0.1:9"
accept_v1 = false
""",
    )
    case = next(c for c in DOC["cases"] if c["header_name"] == "X-PAYMENT")
    assert run([case], "--config", str(path)) == [{"valid": False, "reason": "malformed"}]
