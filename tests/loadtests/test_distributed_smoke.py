"""CI smoke run of the flood in distributed mode (``locust --processes 2``, 10 s): the
tallies of both worker processes reach the master's gate (attack attempts, fees), and
the raw open-loop flood driver offers its rate and counts popgate's answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests import raw_flood
from loadtests.stack import start_stack

ROOT = Path(__file__).resolve().parents[2]
LOCUST = [
    sys.executable,
    "-m",
    "locust",
    "-f",
    str(ROOT / "loadtests/locustfile.py"),
    "--headless",
    "--only-summary",
]
CLASSES = ["FloodBot", "Human", "PayingAgent", "AccountUser", "Replayer", "Sybil", "WorldIdHuman"]


@pytest.mark.slow
def test_distributed_flood_sums_the_workers_and_the_raw_driver_floods(tmp_path: Path, capsys) -> None:
    stack = start_stack(tmp_path / "stack", api_keys=2, sessions=4)
    try:
        env = {
            **os.environ,
            **stack.env,
            "POPGATE_LT_SHAPE": "flood",
            "POPGATE_LT_DURATION": "10",
            "POPGATE_LT_USERS": "14",
            "POPGATE_LT_CLASSES": ",".join(CLASSES),
            "POPGATE_LT_MAX_P95_MS": "8000",
            "POPGATE_LT_SUMMARY": str(tmp_path / "summary.json"),
        }
        proc = subprocess.run(
            [*LOCUST, "--processes", "2", "--csv", str(tmp_path / "dist")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        out = tmp_path / "raw.json"
        args = ["--url", stack.base_url, "--rate", "1500", "--duration", "2", "--conns", "8"]
        assert raw_flood.main([*args, "--out", str(out)]) == 0
    finally:
        stack.close()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert proc.returncode == 0, (
        summary.get("problems"),
        summary.get("breach_examples"),
        proc.stderr[-3000:],
    )
    assert summary["workers"] == 2, "both worker processes sent their tallies"
    assert not summary["breaches"] and not summary["silent_classes"]
    attempts = {k: a["attempts"] for k, a in summary["attacks"].items()}
    assert sum(attempts.values()) > 0, attempts
    assert sum(summary["paid"].values()) > 0, "fees were checked (credits reconciled by the master's gate)"
    raw = json.loads(out.read_text())
    assert 2500 <= raw["offered"] <= 3100, raw["offered"]  # 1500/s for 2 s
    assert raw["answered"] > 100 and set(raw["status"]) <= {"402", "429", "503"}, raw["status"]
