"""``popgate verify <scheme>`` run as a process: JSON Lines in, one verdict line per case out."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_verify(scheme: str, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The verdicts for ``cases``; a trailing line that is not JSON must come back ``malformed``."""
    proc = subprocess.run(
        [sys.executable, "-m", "popgate.gateway.cli.main", "verify", scheme],
        input="".join(json.dumps(c) + "\n" for c in cases) + "not json\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    out = [json.loads(line) for line in proc.stdout.splitlines()]
    assert out[-1] == {"valid": False, "reason": "malformed"}
    return out[:-1]
