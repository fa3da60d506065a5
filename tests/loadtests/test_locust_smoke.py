"""CI smoke run of the flood scenarios: the real origin, facilitator and
gateway as subprocesses on loopback, locust headless for a few seconds with
every user class whose gateway feature exists, so the scenarios never rot."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.stack import start_stack

ROOT = Path(__file__).resolve().parents[2]
CLASSES = [
    "FloodBot",
    "PuzzleBot",
    "Human",
    "PayingAgent",
    "VerifiedAgent",
    "AccountUser",
    "WorldIdHuman",
    "Replayer",
    "Sybil",
    "PrivacyPassHuman",
    "DelegatedFleet",
    "VoucherAgent",
]


@pytest.mark.slow
def test_locust_smoke_gate_passes(tmp_path: Path) -> None:
    """Every user class makes requests, no attack succeeds, the gate exits 0."""
    stack = start_stack(tmp_path / "stack", api_keys=1, sessions=2)
    try:
        # Settings both ways a site owner gives them: POPGATE_LT_* variables and --pg-* flags.
        env = {
            **os.environ,
            **stack.env,
            "POPGATE_LT_SHAPE": "flood",
            "POPGATE_LT_DURATION": "6",
            "POPGATE_LT_USERS": str(len(CLASSES)),
            "POPGATE_LT_REQUIRE_CLASSES": "1",
            "POPGATE_LT_MAX_P95_MS": "5000",
        }
        worldid_proof = env.pop("POPGATE_LT_WORLDID_PROOF")
        flags = [
            "--pg-classes",
            ",".join(CLASSES),
            "--pg-one-each",
            "1",
            "--pg-worldid-proof",
            worldid_proof,
            "--pg-summary",
            str(tmp_path / "summary.json"),
        ]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "locust",
                "-f",
                str(ROOT / "loadtests/locustfile.py"),
                "--headless",
                "--only-summary",
                "--csv",
                str(tmp_path / "smoke"),
                *flags,
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        stack.close()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert proc.returncode == 0, (summary.get("problems"), proc.stdout[-3000:], proc.stderr[-3000:])
    assert summary["classes"] == CLASSES and not summary["silent_classes"]
    assert not summary["breaches"]
    assert sum(a["attempts"] for a in summary["attacks"].values()) > 0
