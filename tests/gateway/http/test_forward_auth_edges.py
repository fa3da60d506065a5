"""The shipped edge configs for real: nginx (deploy/forward-auth/nginx-popgate-auth.conf,
auth_request) and Caddy (deploy/forward-auth/Caddyfile, forward_auth), each with the
demo origin and popgate in forward-auth mode, all on loopback ports the test
picks. Clients talk to the edge only; an inline popgate with the same keys is
the reference for what a refusal must look like."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from popgate.gateway import client
from popgate.gateway.http.server import Running
from tests.conftest import session_token, url_of
from tests.gateway.schemes.puzzle_support import way
from tests.support.edges import UA, caddy, masked, nginx, popgate_pair
from tests.support.servers import free_port

EDGES = {"nginx": nginx, "caddy": caddy}


@dataclass
class Stack:
    edge: str  # the edge proxy's base URL: what clients talk to
    auth: Running  # popgate, mode = "auth"
    inline: Running  # popgate inline, same keys and policy: the reference

    def url(self, path: str) -> str:
        return self.edge + path


@pytest.fixture(params=sorted(EDGES))
async def stack(request, tmp_path: Path, upstream: str, gateway_factory) -> AsyncIterator[Stack]:  # type: ignore[no-untyped-def]
    name = request.param
    if shutil.which(name) is None:
        pytest.fail(f"{name} not installed: `make system-deps` installs it")
    pair = await popgate_pair(tmp_path, upstream, gateway_factory)
    listen = free_port()
    origin_port = int(upstream.rsplit(":", 1)[1])
    with EDGES[name](tmp_path, listen, pair.auth_port, origin_port, auth=pair.listener_port):
        yield Stack(f"http://127.0.0.1:{listen}", pair.auth, pair.inline)


def _pop(seen: dict) -> dict[str, str]:  # type: ignore[type-arg]
    """The PoP-* headers the origin saw (names case-folded: Go proxies canonicalise them)."""
    return {k.lower(): v for k, v in seen["headers"].items() if k.lower().startswith("pop-")}


def _names(seen: dict) -> set[str]:  # type: ignore[type-arg]
    return {k.lower() for k in seen["headers"]}


async def test_no_evidence_gets_popgates_402_through_the_edge(stack, http):
    """The client gets popgate's 402 problem+json with every way out, as inline mode sends it."""
    headers = {**UA, "Host": "api.example"}
    async with http.post(stack.url("/v1/items?x=1"), headers=headers, data=b"payload") as r:
        via_edge = masked(r.status, r.headers, await r.read())
    async with http.post(url_of(stack.inline, "/v1/items?x=1"), headers=headers, data=b"payload") as r:
        inline = masked(r.status, r.headers, await r.read())
    assert via_edge[0] == 402
    body = json.loads(str(via_edge[2]))
    assert [w["kind"] for w in body["ways_out"]] == ["hashcash", "puzzle"]
    assert way(body, "hashcash")["resource"] == "api.example/v1"
    assert via_edge == inline


async def test_session_holder_reaches_the_origin_as_popgate_says(stack, http):
    """200 from the origin; PoP-* from popgate's verdict, never the client's; evidence stripped."""
    token = session_token(stack.auth, "human", subject="human:n1")
    headers = {
        **UA,
        "Cookie": f"a=1; popgate_session={token}; b=2",
        "PoP-Class": "verified-agent",
        "PoP-Charged": "0",
        "X-Hashcash": "1:8:260101:x::y:0",
    }
    async with http.get(stack.url("/api/x?q=1"), headers=headers) as r:
        assert r.status == 200
        seen = await r.json()
    assert seen["path"] == "/api/x?q=1"
    assert _pop(seen) == {"pop-class": "human", "pop-subject": "human:n1", "pop-evidence": "session"}
    assert seen["headers"]["Cookie"] == "a=1; b=2"
    assert "x-hashcash" not in _names(seen)
    async with http.get(stack.url("/api/x"), headers={**UA, "Authorization": f"PoP {token}"}) as r:
        seen = await r.json()
    assert r.status == 200 and "authorization" not in _names(seen)
    assert _pop(seen)["pop-class"] == "human"


async def test_no_credential_of_popgates_reaches_the_origin(stack, http):
    """Session cookie, Authorization: PoP / Bearer pgk_, PoP-Puzzle, X-Hashcash and the x402
    payment headers are stripped; the client's other cookies and Authorization pass."""
    token = session_token(stack.auth, "human", subject="human:n2")
    evidence = {
        "PoP-Puzzle": "pz1.x.y",
        "X-Hashcash": "1:8:260101:x::y:0",
        "PAYMENT-SIGNATURE": "e30=",
        "X-PAYMENT": "e30=",
    }
    cookie = {"Cookie": f"popgate_session={token}; theirs=1"}
    for auth in ("Bearer pgk_" + "0" * 16 + "_" + "A" * 43, f"PoP {token}", f"pop-session {token}"):
        async with http.get(
            stack.url("/api/x"), headers={**UA, **evidence, **cookie, "Authorization": auth}
        ) as r:
            seen = await r.json()
        assert r.status == 200, auth
        assert not {"authorization", "pop-puzzle", "x-hashcash", "payment-signature", "x-payment"} & _names(
            seen
        )
        assert seen["headers"]["Cookie"] == "theirs=1"
        assert token not in json.dumps(seen) and "pgk_" not in json.dumps(seen)
    async with http.get(
        stack.url("/api/x"), headers={**UA, **cookie, "Authorization": "Bearer origin-token"}
    ) as r:
        seen = await r.json()
    assert seen["headers"]["Authorization"] == "Bearer origin-token", "the origin's own credentials pass"


async def test_forward_auth_headers_from_an_untrusted_address_are_refused(stack):
    """Straight to popgate (not through the edge) from 127.0.0.3, outside trusted_proxies: 403."""
    token = session_token(stack.auth, "human")
    spoof = {"X-Forwarded-Uri": "/api/x", "X-Forwarded-Method": "GET", "Authorization": f"PoP {token}"}
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))
    async with aiohttp.ClientSession(connector=connector) as untrusted:
        async with untrusted.get(url_of(stack.auth, "/.well-known/popgate/auth"), headers=spoof) as r:
            assert r.status == 403
            assert (await r.json(content_type=None))["reason"] == "untrusted_caller"
            assert "PoP-Class" not in r.headers


async def test_client_cannot_reach_the_auth_endpoint_to_spoof_a_verdict(stack, http):
    """The auth endpoint is not routed for clients, and client-sent forward-auth headers are overwritten."""
    spoof = {
        **UA,
        "X-Forwarded-Uri": "/open/x",
        "X-Forwarded-Method": "GET",
        "X-Forwarded-For": "198.51.100.1",
        "X-Popgate-Auth": "subrequest",
    }
    for path in (
        "/.well-known/popgate/auth",
        "/.well-known/popgate/auth/open/x",
        "/.well-known/popgate/auth?x",
    ):
        async with http.get(stack.url(path), headers=spoof) as r:
            assert r.status == 404, path
            assert "PoP-Class" not in r.headers
    async with http.get(stack.url("/v1/x"), headers=spoof) as r:
        assert r.status == 402, "the verdict is for the request nginx carries, not the one the client names"
        assert r.headers["Content-Type"].startswith("application/problem+json")
    claims = {**UA, "PoP-Subject": "admin", "X-Popgate-Subject": "admin", "X-Popgate-Class": "human"}
    async with http.get(stack.url("/open/x"), headers=claims) as r:
        assert r.status == 200, "an allowed route is still allowed"
        assert _pop(await r.json()) == {"pop-class": "unknown"}


async def test_browser_gets_the_html_challenge_page(stack, http):
    headers = {**UA, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    async with http.get(stack.url("/api/page"), headers=headers) as r:
        assert r.status == 402
        assert r.headers["Content-Type"].startswith("text/html")
        assert "<html" in (await r.text()).lower()


async def test_throttle_is_429_with_retry_after_through_the_edge(stack, http):
    codes = []
    for _ in range(3):
        async with http.get(stack.url("/feed"), headers=UA) as r:
            codes.append(r.status)
            retry = r.headers.get("Retry-After")
            body = await r.read()
    assert codes[0] == 200 and codes[-1] == 429
    assert retry is not None and json.loads(body)["reason"] == "rate_limited"


async def test_puzzle_solved_through_the_edge_gets_the_client_in(stack, http):
    """popgate's endpoints are routed: 402 → solve → POST the solution → session → origin."""
    async with http.get(stack.url("/api/x"), headers=UA) as r:
        pz = way(await r.json(), "puzzle")
    solved = client.solve_puzzle(pz)
    post = {"solution": solved.headers["PoP-Puzzle"], "return_to": "/api/x"}
    async with http.post(stack.url(pz["submit"]), json=post, headers=UA) as r:
        assert r.status == 200
        token = (await r.json())["token"]
    async with http.get(stack.url("/api/x"), headers={**UA, "Cookie": f"popgate_session={token}"}) as r:
        assert r.status == 200
        seen = await r.json()
    assert _pop(seen)["pop-evidence"] == "puzzle"
    assert "cookie" not in _names(seen), "the session cookie alone is stripped to nothing"
