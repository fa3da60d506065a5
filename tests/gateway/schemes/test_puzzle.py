"""Puzzles and hashcash through a real gateway over loopback: 402 → solve → 200."""

from __future__ import annotations

import aiohttp

from popgate.gateway import client
from tests.conftest import url_of
from tests.gateway.schemes.puzzle_support import puzzle_extra, way

UA = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0",
    "Accept": "application/json",
    "Accept-Language": "en",
    "Sec-Fetch-Mode": "cors",
    "Sec-Fetch-Site": "same-origin",
}


async def test_402_lists_puzzle_and_hashcash_with_www_authenticate(upstream, gateway_factory, http, tmp_path):
    """An unknown client gets 402 problem+json listing the rule's ways out in order, and WWW-Authenticate."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    async with http.get(url_of(gw, "/v1/things"), headers=UA) as r:
        assert r.status == 402
        assert r.headers["Content-Type"].startswith("application/problem+json")
        body = await r.json()
        auth = r.headers["WWW-Authenticate"]
    assert [w["kind"] for w in body["ways_out"]] == ["hashcash", "puzzle"]
    pz = way(body, "puzzle")
    assert pz["bits"] == 16 and pz["challenge"].startswith("pz1.p1.") and pz["submit"].endswith("/puzzle")
    assert f'PoP-Puzzle challenge="{pz["challenge"]}"' in auth
    hc = way(body, "hashcash")
    assert hc["resource"] == "127.0.0.1/v1" and hc["bits"] >= 16


async def test_solution_header_buys_one_request_and_replay_is_refused(
    upstream, gateway_factory, http, tmp_path
):
    """PoP-Puzzle: one request reaches the upstream (PoP-Evidence: puzzle);
    the same solution again: 402 replayed."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    async with http.get(url_of(gw, "/api/x"), headers=UA) as r:
        solved = client.respond(await r.json(), prefer=("puzzle",))
    headers = {**UA, **solved.headers}
    async with http.get(url_of(gw, "/api/x"), headers=headers) as r:
        assert r.status == 200
        info = await r.json()
    assert info["pop"]["PoP-Class"] == "unknown" and info["pop"]["PoP-Evidence"] == "puzzle"
    assert "PoP-Puzzle" not in info["headers"], "the solution is popgate's, not the origin's"
    async with http.get(url_of(gw, "/api/x"), headers=headers) as r:
        assert r.status == 402
        assert (await r.json())["reason"] == "replayed"


async def test_authorization_pop_puzzle_accepted(upstream, gateway_factory, http, tmp_path):
    """``Authorization: PoP-Puzzle <challenge>:<nonce>`` works like the header."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    async with http.get(url_of(gw, "/api/x"), headers=UA) as r:
        solved = client.respond(await r.json(), prefer=("puzzle",))
    value = solved.headers["PoP-Puzzle"]
    async with http.get(url_of(gw, "/api/x"), headers={**UA, "Authorization": f"PoP-Puzzle {value}"}) as r:
        assert r.status == 200


async def test_solution_for_another_route_is_not_accepted(upstream, gateway_factory, http, tmp_path):
    """A challenge is bound to its route scope: solved for the default route, refused on /v1."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    async with http.get(url_of(gw, "/api/x"), headers=UA) as r:
        solved = client.respond(await r.json(), prefer=("puzzle",))
    async with http.get(url_of(gw, "/v1/x"), headers={**UA, **solved.headers}) as r:
        assert r.status == 402


async def test_post_solution_gives_cookie_session_with_budget(upstream, gateway_factory, http, tmp_path):
    """POST /.well-known/popgate/puzzle → JSON token + cookie (Path=/, HttpOnly, SameSite=Lax);
    the session works as cookie or PoP token until its budget (5) is spent."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    async with http.get(url_of(gw, "/api/x"), headers=UA) as r:
        pz = way(await r.json(), "puzzle")
    solved = client.solve_puzzle(pz)
    post = {"solution": solved.headers["PoP-Puzzle"], "return_to": "/api/x?y=1"}
    async with http.post(url_of(gw, pz["submit"]), json=post, headers=UA) as r:
        assert r.status == 200
        body = await r.json()
        cookie = r.headers["Set-Cookie"]
    assert body["redirect"] == "/api/x?y=1" and body["token_type"] == "PoP" and body["budget"] == 5
    low = cookie.lower()
    assert "path=/" in low and "httponly" in low and "samesite=lax" in low and "secure" not in low
    token = body["token"]
    codes = []
    for i in range(6):
        h = {**UA, "Cookie": f"popgate_session={token}"} if i % 2 else {**UA, "Authorization": f"PoP {token}"}
        async with http.get(url_of(gw, "/api/x"), headers=h) as r:
            codes.append(r.status)
            if r.status == 200:
                assert (await r.json())["pop"]["PoP-Evidence"] == "puzzle"
    assert codes == [200] * 5 + [402]
    async with http.post(url_of(gw, pz["submit"]), json=post, headers=UA) as r:
        assert r.status == 403 and (await r.json())["reason"] == "replayed"


async def test_session_bound_to_network(upstream, gateway_factory, http, tmp_path):
    """A puzzle session is bound to the client's /24: another address in it works, another /24 does not."""
    gw = await gateway_factory(
        upstream, extra=puzzle_extra(tmp_path), server_extra='trusted_proxies = ["127.0.0.1/32"]'
    )
    h1 = {**UA, "X-Forwarded-For": "203.0.113.7"}
    async with http.get(url_of(gw, "/api/x"), headers=h1) as r:
        pz = way(await r.json(), "puzzle")
    solution = client.solve_puzzle(pz).headers["PoP-Puzzle"]
    async with http.post(url_of(gw, pz["submit"]), json={"solution": solution}, headers=h1) as r:
        token = (await r.json())["token"]
    auth = {"Authorization": f"PoP {token}"}
    async with http.get(url_of(gw, "/api/x"), headers={**h1, **auth, "X-Forwarded-For": "203.0.113.99"}) as r:
        assert r.status == 200
    async with http.get(url_of(gw, "/api/x"), headers={**h1, **auth, "X-Forwarded-For": "198.51.100.7"}) as r:
        assert r.status == 402
        assert (await r.json())["reason"] == "session_wrong_network"


async def test_puzzle_from_another_network_rejected(upstream, gateway_factory, http, tmp_path):
    """A challenge issued to one /24 and solved from another is refused (wrong_network)."""
    gw = await gateway_factory(
        upstream, extra=puzzle_extra(tmp_path), server_extra='trusted_proxies = ["127.0.0.1/32"]'
    )
    async with http.get(url_of(gw, "/api/x"), headers={**UA, "X-Forwarded-For": "203.0.113.7"}) as r:
        solved = client.respond(await r.json(), prefer=("puzzle",))
    async with http.get(
        url_of(gw, "/api/x"), headers={**UA, **solved.headers, "X-Forwarded-For": "198.51.100.1"}
    ) as r:
        assert r.status == 402 and (await r.json())["reason"] == "wrong_network"


async def test_client_helper_end_to_end(upstream, gateway_factory, tmp_path):
    """popgate.gateway.client.aiohttp_request: 402 → solve → retry → 200 from
    the upstream with PoP-Class set."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as s:
        for path in ("/api/thing", "/v1/thing"):
            resp = await client.aiohttp_request(s, "GET", url_of(gw, path))
            assert resp.status == 200, await resp.text()
            info = await resp.json()
            resp.release()
            assert resp.solved.way in ("puzzle", "hashcash")
            assert info["pop"]["PoP-Class"] == "agent"  # aiohttp's User-Agent declares a bot


async def test_hashcash_stamp_minted_for_the_route(upstream, gateway_factory, http, tmp_path):
    """A fresh X-Hashcash stamp for <host>/<route> passes once; the same stamp again is refused."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    async with http.get(url_of(gw, "/v1/x"), headers=UA) as r:
        solved = client.respond(await r.json(), prefer=("hashcash",))
    async with http.get(url_of(gw, "/v1/x"), headers={**UA, **solved.headers}) as r:
        assert r.status == 200
        assert (await r.json())["pop"]["PoP-Evidence"] == "hashcash"
    async with http.get(url_of(gw, "/v1/x"), headers={**UA, **solved.headers}) as r:
        assert r.status == 402 and (await r.json())["reason"] == "replayed"
    wrong = client.mint_hashcash("127.0.0.1/other", 16)
    async with http.get(url_of(gw, "/v1/x"), headers={**UA, **wrong.headers}) as r:
        assert r.status == 402


async def test_popgate_endpoints_robots_and_health_never_challenged(
    upstream, gateway_factory, http, tmp_path
):
    """robots.txt, /healthz, /.well-known/* and popgate's own endpoints are reachable; probes get 404."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    for path in ("/robots.txt", "/healthz", "/.well-known/security.txt", "/open/x"):
        async with http.get(url_of(gw, path), headers=UA) as r:
            assert r.status == 200, path
    async with http.get(url_of(gw, "/.well-known/popgate/static/challenge-worker.js")) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
        assert "self.onmessage" in await r.text()
    async with http.get(url_of(gw, "/.well-known/popgate/session")) as r:
        assert r.status == 401  # answered by popgate, never a challenge
    async with http.get(url_of(gw, "/.env"), headers=UA) as r:
        assert r.status == 404


async def test_browser_gets_challenge_page_with_402(upstream, gateway_factory, http, tmp_path):
    """Accept: text/html → the challenge page, status 402, carrying the challenge and the return path."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    async with http.get(url_of(gw, "/api/page?a=1"), headers={**UA, "Accept": "text/html"}) as r:
        assert r.status == 402
        assert r.headers["Content-Type"].startswith("text/html")
        text = await r.text()
    assert '"challenge":"pz1.p1.' in text and '"return":"/api/page?a=1"' in text
    assert "/.well-known/popgate/static/challenge-worker.js" in text


async def test_form_post_redirects_browser(upstream, gateway_factory, http, tmp_path):
    """A form post (no JS fetch) of the solution answers 303 to return_to with the cookie."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    async with http.get(url_of(gw, "/api/x"), headers=UA) as r:
        pz = way(await r.json(), "puzzle")
    solution = client.solve_puzzle(pz).headers["PoP-Puzzle"]
    async with http.post(
        url_of(gw, pz["submit"]),
        data={"solution": solution, "return_to": "//evil.example/"},
        headers={**UA, "Accept": "text/html"},
        allow_redirects=False,
    ) as r:
        assert r.status == 303 and r.headers["Location"] == "/"
        assert "popgate_session=" in r.headers["Set-Cookie"]


async def test_bad_puzzle_bodies(upstream, gateway_factory, http, tmp_path):
    """Garbage on the puzzle endpoint is 400/403 problem+json, GET is 405."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    u = url_of(gw, "/.well-known/popgate/puzzle")
    async with http.post(u, data=b"{", headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400
    async with http.post(u, json={"solution": "pz1.p1.xx.yy:1"}) as r:
        assert r.status == 403 and (await r.json())["reason"] == "bad_mac"
    async with http.get(u) as r:
        assert r.status == 405
    async with http.post(u, data=b"x" * 9000) as r:
        assert r.status == 413


async def test_throttle_per_network(upstream, gateway_factory, http, tmp_path):
    """A throttle rule (2/min per network, no burst): the second request within the interval gets 429."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    codes, retry = [], None
    for _ in range(3):
        async with http.get(url_of(gw, "/feed"), headers=UA) as r:
            codes.append(r.status)
            retry = r.headers.get("Retry-After", retry)
    assert codes == [200, 429, 429] and retry is not None and 1 <= int(retry) <= 30


HARD_POLICY = """
[default]
human = "allow"
account = "allow"
verified-agent = "allow"
agent = { kind = "challenge", ways = ["puzzle"], min_bits = 8 }
unknown = { kind = "challenge", ways = ["puzzle"], min_bits = 8 }

[[rules]]
name = "hard"
path = "/hard/**"
[rules.actions]
unknown = { kind = "challenge", ways = ["puzzle"], min_bits = 13 }
agent = { kind = "challenge", ways = ["puzzle"], min_bits = 13 }
"""


async def test_session_bought_cheaply_does_not_open_a_harder_route(upstream, gateway_factory, http, tmp_path):
    """A session carries the bits of the puzzle that bought it: one bought on an 8-bit
    route is refused (402) where the policy asks 13 bits; one bought there opens both."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path, policy=HARD_POLICY))

    async def buy(path: str) -> str:
        async with http.get(url_of(gw, path), headers=UA) as r:
            assert r.status == 402
            pz = way(await r.json(), "puzzle")
        solved = client.solve_puzzle(pz)
        async with http.post(
            url_of(gw, pz["submit"]), json={"solution": solved.headers["PoP-Puzzle"]}, headers=UA
        ) as r:
            assert r.status == 200
            return (await r.json())["token"]

    async def status(path: str, token: str) -> int:
        async with http.get(url_of(gw, path), headers={**UA, "Authorization": f"PoP {token}"}) as r:
            return r.status

    cheap = await buy("/easy/x")
    assert await status("/easy/y", cheap) == 200
    assert await status("/hard/y", cheap) == 402
    dear = await buy("/hard/x")
    assert await status("/hard/y", dear) == 200
    assert await status("/easy/y", dear) == 200
