"""THREAT_MODEL.md and deploy/OPERATIONS.md cite tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cited(text: str) -> list[tuple[str, str]]:
    """(file, test) pairs from `tests/x.py::test_y` and following `::test_z` in one cell."""
    out = []
    for cell in text.split("|"):
        current = None
        for m in re.finditer(r"`((?:tests/[\w/]+/)?test_\w+\.py)?(?:::(test_\w+))?`", cell):
            if m.group(1):
                current = m.group(1)
            if m.group(2) and current:
                out.append((current, m.group(2)))
    return out


def test_cited_tests_exist() -> None:
    """Every `file::test` named in the threat model and the operator guide is a real test."""
    missing = []
    for doc in (ROOT / "THREAT_MODEL.md", ROOT / "deploy" / "OPERATIONS.md"):
        refs = cited(doc.read_text())
        assert refs or doc.name == "OPERATIONS.md"
        for file, test in refs:
            path = ROOT / file
            if "/" not in file:  # a short name: the one test file of that name
                found = list((ROOT / "tests").rglob(file))
                path = found[0] if len(found) == 1 else path
            if not path.is_file() or not re.search(rf"def {test}\(", path.read_text()):
                missing.append(f"{doc.name}: {file}::{test}")
    assert not missing, "\n".join(missing)
