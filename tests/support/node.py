"""The JavaScript packages the suite drives (tests/node, installed by `make test` with npm ci):
where they are, and running a node script against them."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).resolve().parents[1] / "node"
MODULES = NODE_DIR / "node_modules"


def node_binary() -> str:
    """The node executable; fails (saying how to get it) when node or the packages are missing."""
    node = shutil.which("node")
    if node is None or not (MODULES / ".installed").exists():
        raise RuntimeError("node or tests/node/node_modules missing: run `make node-deps` (make test does)")
    return node


def run_node(script: Path | str, *args: str, stdin: Any = None, timeout: float = 60.0) -> Any:
    """Run a node ES module with tests/node's packages resolvable; return its stdout parsed as JSON.

    The script is run from tests/node so `import "<package>"` finds the pinned packages.
    Raises RuntimeError with the script's stderr when it exits non-zero.
    """
    proc = subprocess.run(
        [node_binary(), str(script), *args],
        cwd=NODE_DIR,
        input=None if stdin is None else json.dumps(stdin),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"node {script} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return json.loads(proc.stdout) if proc.stdout.strip() else None
