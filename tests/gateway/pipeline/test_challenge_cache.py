"""402s reused within a window (gateway/pipeline/challenge_cache.py): a real gateway over
loopback; the shared puzzle is still spent once."""

from __future__ import annotations

from urllib.parse import urlsplit

from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway import client
from popgate.gateway.pipeline.challenge_cache import Windowed
from tests.conftest import url_of
from tests.gateway.schemes.puzzle_support import puzzle_extra, way

UA = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/130.0", "Accept": "application/json"}
TRUSTED = 'trusted_proxies = ["127.0.0.1/32"]'


def xff(ip: str) -> dict[str, str]:
    return {**UA, "X-Forwarded-For": ip}


async def _402(http, url: str, headers: dict[str, str]) -> tuple[bytes, str, dict]:
    async with http.get(url, headers=headers) as r:
        assert r.status == 402
        body = await r.read()
        return body, r.headers["WWW-Authenticate"], await r.json()


async def test_one_402_per_network_route_and_window(upstream, gateway_factory, http, tmp_path):
    """Within a window: the same bytes for the same network and target; the same puzzle
    for another path of the route; another network gets its own puzzle (MAC-bound to it)."""
    extra = puzzle_extra(tmp_path, extra="[overload]\nchallenge_window = 30\nchallenge_min_rate = 0\n")
    gw = await gateway_factory(upstream, extra=extra, server_extra=TRUSTED)
    a1 = await _402(http, url_of(gw, "/api/a"), xff("198.51.100.7"))
    a2 = await _402(http, url_of(gw, "/api/a"), xff("198.51.100.9"))
    assert a1[:2] == a2[:2], "same network, same target: the same 402 bytes"
    b = await _402(http, url_of(gw, "/api/b"), xff("198.51.100.7"))
    assert way(b[2], "puzzle")["challenge"] == way(a1[2], "puzzle")["challenge"]
    other = await _402(http, url_of(gw, "/api/a"), xff("203.0.113.7"))
    assert way(other[2], "puzzle")["challenge"] != way(a1[2], "puzzle")["challenge"]


async def test_window_zero_mints_each_402(upstream, gateway_factory, http, tmp_path):
    extra = puzzle_extra(tmp_path, extra="[overload]\nchallenge_window = 0\nchallenge_min_rate = 0\n")
    gw = await gateway_factory(upstream, extra=extra)
    first = await _402(http, url_of(gw, "/api/a"), UA)
    second = await _402(http, url_of(gw, "/api/a"), UA)
    assert way(first[2], "puzzle")["challenge"] != way(second[2], "puzzle")["challenge"]


async def test_shared_puzzle_is_spent_once_and_a_spend_brings_a_fresh_one(
    upstream, gateway_factory, http, tmp_path
):
    """Two clients of one network share a window's puzzle: the first solution posted buys
    a session, the second one (solved independently) is refused ``replayed``. A spend
    retires the network's cached 402s at once (its epoch): the next 402 in the same
    window has a fresh puzzle, and the second client gets in with it."""
    extra = puzzle_extra(tmp_path, extra="[overload]\nchallenge_window = 30\nchallenge_min_rate = 0\n")
    gw = await gateway_factory(upstream, extra=extra, server_extra=TRUSTED)
    alice, bob = xff("198.51.100.7"), xff("198.51.100.8")
    pz_a = way((await _402(http, url_of(gw, "/api/x"), alice))[2], "puzzle")
    pz_b = way((await _402(http, url_of(gw, "/api/x"), bob))[2], "puzzle")
    assert pz_a["challenge"] == pz_b["challenge"]
    for who, pz, want in ((alice, pz_a, 200), (bob, pz_b, 403)):
        post = {"solution": client.solve_puzzle(pz).headers["PoP-Puzzle"], "return_to": "/api/x"}
        async with http.post(url_of(gw, pz["submit"]), json=post, headers=who) as r:
            assert r.status == want
            if want == 403:
                assert (await r.json())["reason"] == "replayed"
    fresh = way((await _402(http, url_of(gw, "/api/x"), bob))[2], "puzzle")
    assert fresh["challenge"] != pz_b["challenge"]
    post = {"solution": client.solve_puzzle(fresh).headers["PoP-Puzzle"], "return_to": "/api/x"}
    async with http.post(url_of(gw, fresh["submit"]), json=post, headers=bob) as r:
        assert r.status == 200


@given(st.lists(st.tuples(st.integers(0, 50), st.floats(0, 100)), max_size=200))
def test_windowed_is_bounded_and_empties_when_the_window_turns(ops):
    cache: Windowed[int] = Windowed(2.0, max_entries=10)
    for key, now in sorted(ops, key=lambda o: o[1]):
        got = cache.get(key, now)
        assert got is None or got == key
        cache.put(key, key)
        assert len(cache.entries) <= 10
        assert cache.slot == int(now // 2.0)


async def test_a_header_spend_retires_the_cached_402_too(upstream, gateway_factory, http, tmp_path):
    """A puzzle spent as a PoP-Puzzle header (not posted) also retires the network's
    cached 402: the same request again gets a 402 with another puzzle."""
    extra = puzzle_extra(tmp_path, extra="[overload]\nchallenge_window = 30\nchallenge_min_rate = 0\n")
    gw = await gateway_factory(upstream, extra=extra)
    first = await _402(http, url_of(gw, "/api/x"), UA)
    solved = client.respond(first[2], prefer=("puzzle",))
    async with http.get(url_of(gw, "/api/x"), headers={**UA, **solved.headers}) as r:
        assert r.status == 200
    again = await _402(http, url_of(gw, "/api/x"), UA)
    assert way(again[2], "puzzle")["challenge"] != way(first[2], "puzzle")["challenge"]


async def test_a_quiet_network_gets_a_puzzle_of_its_own_per_402(upstream, gateway_factory, http, tmp_path):
    """Below challenge_min_rate (default 10 requests/s from the network) nothing is shared:
    clients behind one NAT each get their own puzzle and each buys a session with it."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path))
    pzs = [way((await _402(http, url_of(gw, "/api/x"), UA))[2], "puzzle") for _ in range(3)]
    assert len({p["challenge"] for p in pzs}) == 3
    for pz in pzs:
        post = {"solution": client.solve_puzzle(pz).headers["PoP-Puzzle"], "return_to": "/api/x"}
        async with http.post(url_of(gw, pz["submit"]), json=post, headers=UA) as r:
            assert r.status == 200


async def test_nginx_subrequest_gets_the_reused_402_whole(upstream, gateway_factory, http, tmp_path):
    """A flood's reused 402 through nginx's auth subrequest: every 401 carries exactly the
    402 inline mode sends in that window (status, body, headers nginx returns), the first
    and the ones after it (whose headers are worked out once)."""
    extra = puzzle_extra(tmp_path, extra="[overload]\nchallenge_window = 30\nchallenge_min_rate = 0\n")
    gw = await gateway_factory(upstream, extra=extra, server_extra=TRUSTED)
    body, www, _ = await _402(http, url_of(gw, "/api/a"), xff("198.51.100.7"))
    async with http.get(url_of(gw, "/api/a"), headers=xff("198.51.100.7")) as r:
        inline = {k.lower(): v for k, v in r.headers.items() if k.lower() in NGINX_RETURNS}
    call = {
        **UA,
        "X-Popgate-Auth": "subrequest",
        "X-Forwarded-Method": "GET",
        "X-Forwarded-Uri": "/api/a",
        "X-Forwarded-Host": urlsplit(url_of(gw, "/")).netloc,
        "X-Forwarded-Proto": "http",
        "X-Forwarded-For": "198.51.100.7",
    }
    for _ in range(3):
        async with http.get(url_of(gw, "/.well-known/popgate/auth"), headers=call) as r:
            assert (r.status, r.headers["X-Popgate-Decision"]) == (401, "challenge")
            assert (r.headers["X-Popgate-Status"], r.headers["X-Popgate-Body"].encode()) == ("402", body)
            prefix = len("X-Popgate-R-")
            returned = {k[prefix:].lower(): v for k, v in r.headers.items() if k.startswith("X-Popgate-R-")}
            assert returned == inline and returned["www-authenticate"] == www


NGINX_RETURNS = frozenset(
    {"www-authenticate", "payment-required", "retry-after", "cache-control", "crawler-price"}
)
