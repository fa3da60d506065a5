"""gateway/static/popgate-client.js: the same cases as the Python helper (tests/gateway/test_client.py),
run by node, checked with popgate's own verifiers; then against real gateways (puzzle, World ID)
from node and, with the puzzle solved in a Web Worker, from Chromium."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from popgate.verifiers import hashcash, puzzle
from tests.conftest import url_of
from tests.gateway.schemes.puzzle_support import puzzle_extra
from tests.gateway.schemes.worldid_support import CASES, worldid_toml
from tests.gateway.test_client import KEYS, problem
from tests.support.browser import ARGS, CHROMIUM, playwright
from tests.support.node import NODE_DIR, run_node

SCRIPT = NODE_DIR / "scripts" / "client_cases.mjs"


async def node_cases(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = await asyncio.to_thread(run_node, SCRIPT, stdin={"cases": cases}, timeout=120)
    return out


async def test_respond_puzzle_hashcash_and_cannot_solve() -> None:
    """Puzzle answers (two sub-puzzles) and hashcash stamps verify; unsolvable problems raise."""
    now = time.time()
    c = puzzle.issue(KEYS, network="203.0.113.0/24", scope="api", bits=12, now=now, subs=2)
    hard = puzzle.issue(KEYS, network="203.0.113.0/24", scope="api", bits=30, now=now)
    easy = puzzle.issue(KEYS, network="203.0.113.0/24", scope="api", bits=4, now=now)
    out = await node_cases(
        [
            {"op": "respond", "problem": problem(c)},
            {"op": "respond", "problem": json.dumps(problem(easy)), "prefer": ["hashcash", "puzzle"]},
            {"op": "respond", "problem": {"ways_out": [{"type": "pay"}]}},
            {"op": "respond", "problem": problem(hard, with_hashcash=False), "maxBits": 20},
            {"op": "respond", "problem": "[1, 2]"},
            {"op": "waysOut", "problem": {"ways_out": "nope"}},
        ]
    )
    solved = out[0]["solved"]
    assert solved["way"] == "puzzle" and solved["hashes"] >= 2 and solved["seconds"] > 0, solved
    wire, nonces = puzzle.parse_solution(solved["headers"]["PoP-Puzzle"])
    puzzle.check(KEYS, wire, nonces, now=now, network="203.0.113.0/24", scope="api")
    stamp = out[1]["solved"]["headers"]["X-Hashcash"]
    assert hashcash.check(stamp, resource="127.0.0.1/api", now=now, min_bits=10).bits >= 10
    assert [o.get("error") for o in out[2:5]] == ["CannotSolve"] * 3, out[2:5]
    assert out[5] == {"ways": []}


async def test_pop_fetch_against_a_real_gateway(upstream, gateway_factory, tmp_path) -> None:
    """402 → solved in node → retried once → 200 at the origin; the same answer again is refused."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path, floor=10))
    out = await node_cases([{"op": "popFetch", "url": url_of(gw, "/api/js?n=1")}])
    first = out[0]
    assert first["status"] == 200, first
    assert first["body"]["pop"]["PoP-Evidence"] == "puzzle" and first["solved"]["way"] == "puzzle"
    replay = await node_cases(
        [{"op": "fetch", "url": url_of(gw, "/api/js?n=1"), "headers": first["solved"]["headers"]}]
    )
    assert replay[0]["status"] == 402 and replay[0]["body"]["reason"] == "replayed", replay


async def test_pop_fetch_posts_a_world_id_result(upstream, gateway_factory) -> None:
    """A 402 offering `prove`: the IDKit result is posted, the session token rides the retry;
    the same person again gets the gateway's refusal as a PopgateError."""
    gw = await gateway_factory(upstream, extra=worldid_toml())
    case = {
        "op": "popFetch",
        "url": url_of(gw, "/api/human"),
        "worldid": CASES[1]["idkit2_result"],
        "signal": CASES[1]["signal"],
    }
    out = await node_cases([case, case])
    assert out[0]["status"] == 200, out[0]
    assert out[0]["body"]["pop"]["PoP-Class"] == "human" and out[0]["session"]["class"] == "human"
    assert (out[1]["error"], out[1]["status"], out[1]["reason"]) == ("PopgateError", 409, "nullifier_reused")


async def test_browser_solves_in_a_worker(upstream, gateway_factory, tmp_path) -> None:
    """The module served by the gateway, imported by a page: the puzzle is solved in the
    gateway's Web Worker and the retried fetch reaches the origin."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path, floor=10))
    script = """async () => {
        const m = await import('/.well-known/popgate/static/popgate-client.js');
        const r = await m.popFetch('/api/browser?x=1', {headers: {Accept: 'application/json'}});
        const loaded = performance.getEntriesByType('resource').map(e => e.name);
        return {status: r.status, body: await r.json(), way: r.solved && r.solved.way,
                worker: loaded.some(name => name.endsWith('challenge-worker.js'))};
    }"""
    async with playwright()() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = await browser.new_page()
            await page.goto(url_of(gw, "/.well-known/popgate/session"))
            got = await page.evaluate(script)
        finally:
            await browser.close()
    assert got["status"] == 200 and got["way"] == "puzzle", got
    assert got["body"]["pop"]["PoP-Evidence"] == "puzzle" and got["worker"], got
