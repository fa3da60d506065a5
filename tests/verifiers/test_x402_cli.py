"""``popgate verify x402`` over the whole fixture file in one run (shared store)."""

from __future__ import annotations

import io
import json

from popgate.gateway.cli.verify import load_checker, run_cases
from tests.fixtures.x402.cases import DOC


async def test_cli_run_matches_expectations() -> None:
    """Every case in file order gives its expected verdict; the replay case is
    caught because the run shares one store; valid lines carry the payer."""
    lines = io.StringIO("".join(json.dumps(c) + "\n" for c in DOC["cases"]))
    out = io.StringIO()
    await run_cases(load_checker("x402"), None, lines, out)
    results = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(results) == len(DOC["cases"])
    for case, got in zip(DOC["cases"], results):
        exp = case["expect"]
        assert got["valid"] is exp["valid"], case["name"]
        assert got["reason"] == ("ok" if exp["valid"] else exp["reason"]), case["name"]
        if exp["valid"]:
            assert got["payer"] == exp["payer"] and got["amount"] == "10000"


async def test_cli_v1_disabled_by_config() -> None:
    """With [x402] accept_v1 = false an X-PAYMENT case is malformed."""

    class Cfg:
        class x402:
            accept_v1 = False

    case = next(c for c in DOC["cases"] if c["header_name"] == "X-PAYMENT")
    out = io.StringIO()
    await run_cases(load_checker("x402"), Cfg, io.StringIO(json.dumps(case) + "\n"), out)
    assert json.loads(out.getvalue()) == {"valid": False, "reason": "malformed"}
