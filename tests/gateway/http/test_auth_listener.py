"""The forward-auth listener (``[server] auth_listen``, gateway/http/auth_listener.py) answers
as the main port: for every auth-call shape (nginx subrequest and render, Caddy/Traefik,
Envoy ext_authz, browsers, bad headers, throttles, budgets) over real loopback sockets, and
for any forward-auth header values (hypothesis); only trusted proxies may ask it.
Connections, limits and timeouts: test_auth_listener_conn.py."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from popgate.gateway.http.server import Running, start
from popgate.gateway.ops.config import ConfigError, load_config
from tests.conftest import session_token
from tests.gateway.http.lean import (
    ANSWER_TIMEOUT,
    AUTH,
    HTML,
    SUB,
    TRUST,
    Conn,
    call_bytes,
    forwarded,
    human_session,
    lean_port,
    listen_extra,
    main_port,
    with_header,
)
from tests.gateway.http.raw import RawResponse, exchange_sync, request_bytes
from tests.gateway.schemes.puzzle_support import puzzle_extra
from tests.support.servers import write_config

# What differs between two answers to the same call and is not the answer: transport
# headers, the puzzle's fresh nonce and expiry, and a sealed verdict (its own expiry and MAC).
TRANSPORT = frozenset({"date", "server", "connection", "content-length", "keep-alive"})
FRESH = re.compile(r"pz1\.[\w.-]+|(?<=expires=)\d+|(?<=\"expires\":)\d+|(?<=expires&quot;:)\d+")


def comparable(status: int, headers: Any, body: bytes) -> tuple[object, ...]:
    pairs = [(k.lower(), v) for k, v in (headers.items() if hasattr(headers, "items") else headers)]
    kept = sorted(
        (
            (k, "sealed" if k == "x-popgate-verdict" else FRESH.sub("0", v))
            for k, v in pairs
            if k not in TRANSPORT
        ),
        key=lambda kv: kv[0],
    )
    return status, kept, FRESH.sub("0", body.decode("utf-8", "replace"))


async def ask(
    http: aiohttp.ClientSession, port: int, method: str, path: str, headers: Any, data: Any = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    url = f"http://127.0.0.1:{port}{path}"
    timeout = aiohttp.ClientTimeout(total=ANSWER_TIMEOUT)
    async with http.request(method, url, headers=headers, data=data, timeout=timeout) as r:
        return r.status, list(r.headers.items()), await r.read()


async def both(
    http: aiohttp.ClientSession, gw: Running, method: str, path: str, headers: Any, data: Any = None
) -> tuple[tuple[object, ...], tuple[object, ...]]:
    """The same call on the main port and on the lean listener, comparable."""
    main = await ask(http, main_port(gw), method, path, headers, data)
    lean = await ask(http, lean_port(gw), method, path, headers, data)
    return comparable(*main), comparable(*lean)


@pytest.fixture
async def gw(upstream: str, gateway_factory: Any, tmp_path: Path) -> Running:
    """One inline gateway (the test policy, puzzle and hashcash) with the lean listener too."""
    running: Running = await gateway_factory(
        upstream, server_extra=listen_extra(), extra=puzzle_extra(tmp_path)
    )
    return running


# 1. Same answers on both ports ---------------------------------------------------------------

Shape = Callable[[Running], tuple[str, str, Any]]


def _repeated(name: str, value: str) -> list[tuple[str, str]]:
    return [*forwarded().items(), (name, value)]


def _without(name: str) -> dict[str, str]:
    headers = forwarded()
    del headers[name]
    return headers


ENVOY = {"Host": "api.example", "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}

SHAPES: dict[str, tuple[Shape, int]] = {
    "session_bearer_allow": (
        lambda gw: (
            "GET",
            AUTH,
            forwarded(Authorization=f"PoP {human_session(gw)}", **{"PoP-Class": "agent"}),
        ),
        200,
    ),
    "session_cookie_nginx_subrequest_allow": (
        lambda gw: ("GET", AUTH, forwarded(Cookie=f"a=1; popgate_session={human_session(gw)}", **SUB)),
        200,
    ),
    "open_route_allow_anonymous": (lambda gw: ("GET", AUTH, forwarded("/open/a")), 200),
    "anonymous_json_caddy_traefik_402": (lambda gw: ("GET", AUTH, forwarded("/v1/x?q=1", "POST")), 402),
    "anonymous_json_nginx_subrequest_401_plain": (lambda gw: ("GET", AUTH, forwarded("/v1/x", **SUB)), 401),
    "browser_page_402": (lambda gw: ("GET", AUTH, forwarded("/v1/x", **HTML)), 402),
    "browser_nginx_subrequest_401_sealed": (lambda gw: ("GET", AUTH, forwarded("/v1/x", **SUB, **HTML)), 401),
    "denied_path": (lambda gw: ("GET", AUTH, forwarded("/.git/config")), 404),
    "denied_path_subrequest": (lambda gw: ("GET", AUTH, forwarded("/.git/config", **SUB)), 401),
    "bad_method": (lambda gw: ("GET", AUTH, with_header("X-Forwarded-Method", "G ET")), 400),
    "bad_uri_no_slash": (lambda gw: ("GET", AUTH, with_header("X-Forwarded-Uri", "no-slash")), 400),
    "bad_uri_space": (lambda gw: ("GET", AUTH, with_header("X-Forwarded-Uri", "/a b")), 400),
    "bad_host": (lambda gw: ("GET", AUTH, with_header("X-Forwarded-Host", "a b")), 400),
    "bad_proto": (lambda gw: ("GET", AUTH, with_header("X-Forwarded-Proto", "gopher")), 400),
    "bad_style": (lambda gw: ("GET", AUTH, with_header("X-Popgate-Auth", "maybe")), 400),
    "missing_uri": (lambda gw: ("GET", AUTH, _without("X-Forwarded-Uri")), 400),
    "repeated_uri": (lambda gw: ("GET", AUTH, _repeated("X-Forwarded-Uri", "/other")), 400),
    "repeated_method": (lambda gw: ("GET", AUTH, _repeated("X-Forwarded-Method", "POST")), 400),
    "repeated_host": (lambda gw: ("GET", AUTH, _repeated("X-Forwarded-Host", "b.example")), 400),
    "repeated_proto": (lambda gw: ("GET", AUTH, _repeated("X-Forwarded-Proto", "http")), 400),
    "bad_uri_subrequest_sealed": (
        lambda gw: ("GET", AUTH, {**with_header("X-Forwarded-Uri", "x"), **SUB}),
        401,
    ),
    "envoy_ext_authz_anonymous": (lambda gw: ("DELETE", AUTH + "/api/items/1?x=1", ENVOY), 402),
    "envoy_ext_authz_session": (
        lambda gw: (
            "DELETE",
            AUTH + "/api/items/1?x=1",
            {**ENVOY, "Authorization": f"PoP {human_session(gw)}"},
        ),
        200,
    ),
    "envoy_no_suffix_no_uri": (lambda gw: ("GET", AUTH, ENVOY), 400),
    "render_empty_seal": (lambda gw: ("POST", AUTH, {"X-Popgate-Auth": "render"}), 503),
    "render_forged_seal": (
        lambda gw: ("POST", AUTH, {"X-Popgate-Auth": "render", "Content-Type": "text/plain"}),
        503,
    ),
}
BODIES = {"render_forged_seal": b"v1.k1.1.AAAA.BBBB"}


@pytest.mark.parametrize("name", sorted(SHAPES))
async def test_lean_listener_answers_as_the_main_port(gw, http, name):
    """Status, every header but the transport's, and body are the main port's (puzzle nonces masked)."""
    build, status = SHAPES[name]
    method, path, headers = build(gw)
    main, lean = await both(http, gw, method, path, headers, BODIES.get(name))
    assert main[0] == status, main
    assert lean == main
    if status == 400:
        assert json.loads(str(lean[2]))["reason"] == "bad_forward_auth"
        assert ("content-type", "application/problem+json") in lean[1]


async def test_allow_headers_on_the_lean_listener(gw, http):
    """The allow carries identity and cacheability the edge copies (not the client's PoP-Class)."""
    headers = forwarded(Authorization=f"PoP {human_session(gw)}", **{"PoP-Class": "agent"})
    status, pairs, body = await ask(http, lean_port(gw), "GET", AUTH, headers)
    h = dict(pairs)
    assert (status, body) == (200, b"")
    assert (h["PoP-Class"], h["PoP-Subject"], h["PoP-Evidence"]) == ("human", "human:abc", "session")
    assert (h["X-Accel-Expires"], h["Cache-Control"]) == ("30", "private, max-age=30")


async def test_sealed_verdict_renders_the_same_page_on_either_port(gw, http):
    """The browser's sealed verdict from either port renders (on either port) as the page the
    direct call gets; a stale or forged seal is 503 verdict_expired on both."""
    call = forwarded("/v1/x", **SUB, **HTML)
    seals = []
    for port in (main_port(gw), lean_port(gw)):
        status, pairs, _ = await ask(http, port, "GET", AUTH, call)
        assert status == 401
        seals.append(dict(pairs)["X-Popgate-Verdict"])
    direct = comparable(*await ask(http, main_port(gw), "GET", AUTH, forwarded("/v1/x", **HTML)))
    render = {"X-Popgate-Auth": "render"}
    for seal in seals:
        for port in (main_port(gw), lean_port(gw)):
            rendered = comparable(*await ask(http, port, "POST", AUTH, render, seal))
            assert rendered == direct, port
    assert direct[0] == 402 and "<html" in str(direct[2])
    v, kid, exp, payload, mac = seals[1].split(".")
    for forged in (
        f"{v}.{kid}.{int(exp) + 60}.{payload}.{mac}",
        f"{v}.{kid}.{int(exp) - 3600}.{payload}.{mac}",
    ):
        main, lean = await both(http, gw, "POST", AUTH, render, forged)
        assert main[0] == 503 and lean == main
        assert json.loads(str(lean[2]))["reason"] == "verdict_expired"


async def test_throttle_is_counted_the_same_on_the_lean_listener(gw, http):
    """The throttled route (2/min per network, no burst): the same sequence and 429 on both ports,
    each port asked for its own client network (the budget is the forwarded client's)."""
    answers = {}
    for port, client in ((main_port(gw), "203.0.113.7"), (lean_port(gw), "198.51.100.9")):
        call = forwarded("/feed", **{"X-Forwarded-For": client})
        answers[port] = [comparable(*await ask(http, port, "GET", AUTH, call)) for _ in range(4)]
    main, lean = answers.values()
    statuses = [a[0] for a in main]
    assert statuses[0] == 200 and statuses[-1] == 429, statuses
    assert lean == main
    assert any(k == "retry-after" for k, _ in main[-1][1])


async def test_session_budget_is_spent_the_same_on_the_lean_listener(gw, http):
    """A budgeted session (2 uses): the same answers, in the same order, on either port."""
    answers = []
    for port in (main_port(gw), lean_port(gw)):
        token = human_session(gw, budget=2)
        call = forwarded(Authorization=f"PoP {token}")
        answers.append([comparable(*await ask(http, port, "GET", AUTH, call)) for _ in range(3)])
    main, lean = answers
    assert [a[0] for a in main][:2] == [200, 200] and main[2][0] != 200
    assert ("x-accel-expires", "0") in main[0][1], "a budgeted allow is never cached at the edge"
    assert lean == main


# 2. Property: whatever the forward-auth headers hold, both ports agree -------------------------


class Background:
    """One gateway (the test policy, lean listener on) on an event loop in a thread, for
    hypothesis to drive with blocking sockets."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def __enter__(self) -> Running:
        self.thread.start()
        path = write_config(
            self.tmp, "http://127.0.0.1:1", server_extra=listen_extra(), extra=puzzle_extra(self.tmp)
        )
        self.running: Running = self.run(start(load_config(path)))
        return self.running

    def __exit__(self, *exc: object) -> None:
        self.run(self.running.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def background(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    with Background(tmp_path_factory.mktemp("lean")) as running:
        yield running


TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=24
)
VALUE = st.one_of(
    TEXT,
    st.sampled_from(
        [
            *("GET", "get", "POST", "G ET", "M" * 33, "", " ", "\t/x", "/x\t", "/", "/a b", "/é", "/%00"),
            *("/api/x?q=1", "//x", "/../admin", "http://a/x", "*", "https", "HTTP", "http, https", "ws"),
            *("api.example", "API.example:8443", "[::1]:8080", "a..b", "a,b", "bücher.example", "-"),
            *("/v1/x", "/open/a", "/.git/config", "x" * 300, "/" + "y" * 8300),
        ]
    ),
)
FORWARDED = ("X-Forwarded-Method", "X-Forwarded-Uri", "X-Forwarded-Host", "X-Forwarded-Proto")


def _verdict(answer: RawResponse) -> tuple[int, str | None]:
    """Status, and the problem's reason when the answer is problem+json."""
    if answer.headers.get("content-type", "").startswith("application/problem+json"):
        return answer.status, answer.json().get("reason")
    return answer.status, None


@settings(max_examples=50, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    values=st.fixed_dictionaries({name: st.lists(VALUE, max_size=2) for name in FORWARDED}),
    style=st.sampled_from(["", "subrequest"]),
    suffix=st.sampled_from(["", "/api/items/1", "/x?y=1"]),
)
def test_any_forward_auth_headers_get_the_same_verdict_on_both_ports(background, values, style, suffix):
    """Absent, odd, overlong or repeated X-Forwarded-* values: the lean listener and the main
    port give the same status and reason; never a 500, never a hang (reads time out)."""
    headers = [(name, value) for name in FORWARDED for value in values[name]]
    if style:
        headers.append(("X-Popgate-Auth", style))
    data = request_bytes(f"GET {AUTH}{suffix} HTTP/1.1", [("Host", "api.example"), *headers])
    main = exchange_sync(main_port(background), data, timeout=ANSWER_TIMEOUT)
    lean = exchange_sync(lean_port(background), data, timeout=ANSWER_TIMEOUT)
    assert _verdict(lean) == _verdict(main), (headers, main.body, lean.body)
    assert main.status < 500 and lean.status < 500


# 3. Untrusted peers, and the config that needs trusted proxies --------------------------------


async def test_untrusted_peer_gets_403_and_the_connection_closes(upstream, gateway_factory):
    """Loopback outside trusted_proxies: 403 problem+json at once, before a byte is read, then EOF."""
    gw = await gateway_factory(upstream, server_extra=listen_extra('trusted_proxies = ["10.0.0.0/8"]'))
    conn = await Conn.open(lean_port(gw))
    answer = await conn.answer()
    assert answer.status == 403
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["reason"] == "untrusted_caller"
    assert await conn.eof()
    token = session_token(gw)
    conn = await Conn.open(lean_port(gw))
    await conn.send(call_bytes(forwarded(Authorization=f"PoP {token}")))
    answer = await conn.answer()
    assert answer.status == 403 and "pop-class" not in answer.headers
    assert await conn.eof()


def test_auth_listen_needs_trusted_proxies(tmp_path):
    """auth_listen without trusted_proxies (absent or empty) is a config error naming the key."""
    path = write_config(tmp_path, "http://127.0.0.1:1", server_extra='auth_listen = "127.0.0.1:1"')
    with pytest.raises(ConfigError, match=r"server\.trusted_proxies"):
        load_config(path)
    empty = 'auth_listen = "127.0.0.1:1"\ntrusted_proxies = []'
    path = write_config(tmp_path, "http://127.0.0.1:1", server_extra=empty)
    with pytest.raises(ConfigError, match=r"server\.trusted_proxies"):
        load_config(path)
    path = write_config(tmp_path, "http://127.0.0.1:1", server_extra=f'{TRUST}\nauth_listen = "nowhere"')
    with pytest.raises(ConfigError, match=r"server\.auth_listen"):
        load_config(path)


async def test_a_flood_s_reused_402_is_the_same_401_on_both_ports(
    upstream: str, gateway_factory: Any, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """In a flood's window the 402 is reused, and the 401 carrying it to nginx's subrequest
    is made and encoded once (auth_wire.Encoded): every copy the listener sends, the first
    and those after it, is what the main port sends."""
    extra = puzzle_extra(tmp_path, extra="[overload]\nchallenge_window = 30\nchallenge_min_rate = 0\n")
    running = await gateway_factory(upstream, server_extra=listen_extra(), extra=extra)
    headers = forwarded("/api/a", **SUB)
    answers = []
    for _ in range(3):
        main, lean = await both(http, running, "GET", AUTH, headers)
        assert main == lean
        answers.append(lean)
    status, kept, _ = answers[0]
    assert status == 401 and ("x-popgate-status", "402") in kept
    assert ("x-content-type-options", "nosniff") not in kept, "nginx reads it; no browser does"
    assert answers[1] == answers[0] and answers[2] == answers[0]
