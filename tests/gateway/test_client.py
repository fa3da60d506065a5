"""popgate.gateway.client: solve a popgate 402 (puzzle or hashcash) and retry once."""

from __future__ import annotations

import json
import time
from typing import Any, ClassVar

import pytest
from aiohttp import web

from popgate.gateway import client
from popgate.gateway.stores.base import spend
from popgate.gateway.stores.memory import MemoryStore
from popgate.verifiers import hashcash, puzzle
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.net import network_of

KEYS = puzzle.PuzzleKeys({"k1": b"k" * 32}, "k1")


def problem(c: puzzle.Challenge, with_hashcash: bool = True) -> dict[str, Any]:
    ways: list[dict[str, Any]] = [{"type": "prove", "worldid": {"app_id": "app_x"}}, puzzle.way_out(c)]
    if with_hashcash:
        ways.append(hashcash.way_out("127.0.0.1/api", 10, max_age=3600))
    return {
        "type": "urn:popgate:problem:evidence_required",
        "title": "Evidence required",
        "status": 402,
        "ways_out": ways,
    }


def test_respond_solves_puzzle_and_reports_cost() -> None:
    """The puzzle answer verifies; hashes and time are reported."""
    now = time.time()
    c = puzzle.issue(KEYS, network="203.0.113.0/24", scope="api", bits=12, now=now, subs=2)
    solved = client.respond(json.dumps(problem(c)))
    assert solved.way == "puzzle" and solved.hashes >= 2 and solved.seconds > 0 and solved.hash_rate > 0
    wire, nonces = puzzle.parse_solution(solved.headers["PoP-Puzzle"])
    puzzle.check(KEYS, wire, nonces, now=now, network="203.0.113.0/24", scope="api")


def test_respond_mints_hashcash_when_preferred() -> None:
    now = time.time()
    c = puzzle.issue(KEYS, network="203.0.113.0/24", scope="api", bits=4, now=now)
    solved = client.respond(problem(c), prefer=("hashcash", "puzzle"))
    att = hashcash.check(solved.headers["X-Hashcash"], resource="127.0.0.1/api", now=now, min_bits=10)
    assert att.bits >= 10


def test_cannot_solve() -> None:
    """No solvable way out, or one harder than max_bits, raises CannotSolve."""
    with pytest.raises(client.CannotSolve):
        client.respond({"ways_out": [{"type": "pay"}]})
    c = puzzle.issue(KEYS, network="203.0.113.0/24", scope="api", bits=30, now=time.time())
    with pytest.raises(client.CannotSolve):
        client.respond(problem(c, with_hashcash=False), max_bits=20)
    with pytest.raises(client.CannotSolve):
        client.respond("[1, 2]")
    assert client.ways_out({"ways_out": "nope"}) == []


def make_app(store: MemoryStore) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        now = time.time()
        value = request.headers.get("PoP-Puzzle")
        if value is not None:
            try:
                att = puzzle.verify(KEYS, value, now=now, client_ip=request.remote, scope="api")
                await spend(store, att.spend)
                return web.json_response({"ok": True})
            except VerificationError as e:
                return web.json_response({"reason": e.reason}, status=403)
        c = puzzle.issue(
            KEYS, network=network_of(request.remote or "127.0.0.1"), scope="api", bits=10, now=now
        )
        return web.json_response(problem(c), status=402, content_type="application/problem+json")

    app = web.Application()
    app.router.add_get("/api", handler)
    return app


async def test_aiohttp_wrapper_retries_once(aiohttp_client: Any) -> None:
    """Against a real server: 402 → solve → retry with PoP-Puzzle → 200."""
    store = MemoryStore()
    cl = await aiohttp_client(make_app(store))
    resp = await client.aiohttp_request(cl.session, "GET", str(cl.make_url("/api")))
    assert resp.status == 200 and await resp.json() == {"ok": True}
    assert resp.solved.way == "puzzle"
    replay = await cl.get("/api", headers=resp.solved.headers)
    assert replay.status == 403 and (await replay.json())["reason"] == "replayed"


class FakeRequests:
    """A requests.Session stand-in: first answer 402, then echo the headers."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body, self.calls = body, []  # type: ignore[var-annotated]

    def request(self, method: str, url: str, **kw: Any) -> Any:
        self.calls.append(kw.get("headers"))
        status = 402 if len(self.calls) == 1 else 200
        body = self.body

        class R:
            status_code = status
            headers: ClassVar[dict[str, str]] = {"Content-Type": "application/problem+json; charset=utf-8"}

            def json(self) -> Any:
                return body

        return R()


def test_requests_wrapper() -> None:
    c = puzzle.issue(KEYS, network="203.0.113.0/24", scope="api", bits=6, now=time.time())
    s = FakeRequests(problem(c))
    r = client.requests_request(s, "GET", "http://x/api", headers={"Accept": "application/json"})
    assert r.status_code == 200 and len(s.calls) == 2
    assert s.calls[1]["Accept"] == "application/json" and s.calls[1]["PoP-Puzzle"].startswith(c.wire + ":")
