"""The forward-auth listener's connections, over real loopback sockets: other paths are 404
on a connection that stays usable, keep-alive and pipelining answer in order, the limits
(431, 413, 400) and timeouts (408, idle close) hold, and a call in flight when the gateway
stops still gets its answer. Its answers themselves: test_auth_listener.py."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from popgate.gateway.http.server import Running, start
from popgate.gateway.http.verdicts import MAX_SEALED
from popgate.gateway.ops.config import load_config
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
from tests.gateway.http.raw import RawResponse, parse
from tests.gateway.schemes.puzzle_support import puzzle_extra
from tests.support.servers import write_config


@pytest.fixture
async def gw(upstream: str, gateway_factory: Any, tmp_path: Path) -> Running:
    """One inline gateway (the test policy, puzzle and hashcash) with the lean listener too."""
    running: Running = await gateway_factory(
        upstream, server_extra=listen_extra(), extra=puzzle_extra(tmp_path)
    )
    return running


# 4. Other paths --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/", "/api/x", "/.well-known/popgate/authx", "/.well-known/popgate/session", "/metrics"]
)
async def test_other_paths_are_404_and_the_connection_stays_usable(gw, http, path):
    conn = await Conn.open(lean_port(gw))
    await conn.send(call_bytes(forwarded(), path=path))
    answer = await conn.answer()
    assert answer.status == 404
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["reason"] == "no_such_endpoint"
    await conn.send(call_bytes(forwarded(Authorization=f"PoP {human_session(gw)}"), close=True))
    answer = await conn.answer()
    assert (answer.status, answer.headers["pop-class"]) == (200, "human")
    assert await conn.eof()


async def test_other_path_with_connection_close_closes(gw):
    """``Connection: close`` on a request the listener 404s: it closes after the answer."""
    conn = await Conn.open(lean_port(gw))
    await conn.send(call_bytes({}, path="/elsewhere", close=True))
    answer = await conn.answer()
    assert answer.status == 404 and answer.headers["connection"] == "close"
    assert await conn.eof(timeout=3)


# 5. Keep-alive and pipelining ------------------------------------------------------------------


async def test_pipelined_calls_are_answered_in_order(gw):
    """Several calls written at once on one connection: each answer is its own, in order;
    the last says Connection: close and the listener closes after it."""
    token = human_session(gw)
    calls = [
        (call_bytes(forwarded(Authorization=f"PoP {token}")), 200),
        (call_bytes(forwarded("/v1/x")), 402),
        (call_bytes({}, path="/nope"), 404),
        (call_bytes(forwarded("/v1/x", **SUB)), 401),
        (call_bytes(forwarded(Cookie=f"popgate_session={token}", **SUB)), 200),
        (call_bytes(with_header("X-Forwarded-Uri", "bad")), 400),
        (call_bytes(forwarded("/open/x"), close=True), 200),
    ]
    conn = await Conn.open(lean_port(gw))
    await conn.send(b"".join(data for data, _ in calls))
    answers = [await conn.answer() for _ in calls]
    assert [a.status for a in answers] == [status for _, status in calls]
    assert answers[0].headers["pop-class"] == "human" and "pop-class" not in answers[1].headers
    assert answers[1].json()["ways_out"]
    assert answers[3].headers["x-popgate-status"] == "402"
    assert answers[5].json()["reason"] == "bad_forward_auth"
    assert [a.headers["connection"] for a in answers] == ["keep-alive"] * 6 + ["close"]
    assert await conn.eof()


async def test_keep_alive_serves_calls_one_after_another_then_close(gw):
    token = human_session(gw)
    conn = await Conn.open(lean_port(gw))
    for _ in range(5):
        await conn.send(call_bytes(forwarded(Authorization=f"PoP {token}")))
        answer = await conn.answer()
        assert (answer.status, answer.headers["connection"]) == (200, "keep-alive")
    await conn.send(call_bytes(forwarded("/v1/x"), close=True))
    answer = await conn.answer()
    assert (answer.status, answer.headers["connection"]) == (402, "close")
    assert await conn.eof()


async def test_render_call_body_on_a_kept_alive_connection(gw):
    """A render call's body (the seal) is read by length: the next call on the connection is whole."""
    conn = await Conn.open(lean_port(gw))
    await conn.send(call_bytes(forwarded("/v1/x", **SUB, **HTML)))
    seal = (await conn.answer()).headers["x-popgate-verdict"].encode()
    render = call_bytes({"X-Popgate-Auth": "render"}, method="POST", body=seal)
    await conn.send(render + call_bytes(forwarded("/open/x"), close=True))
    page, after = await conn.answer(), await conn.answer()
    assert page.status == 402 and b"<html" in page.body
    assert after.status == 200
    assert await conn.eof()


async def test_head_auth_call_gets_no_body(gw):
    """Envoy's ext_authz asks with the client's method: a HEAD call's answer has the head the
    GET would have (Content-Length included) and no body, as on the main port, so the next
    answer on the connection starts where the proxy expects it."""
    envoy = [("X-Forwarded-For", "203.0.113.7")]
    for port in (main_port(gw), lean_port(gw)):
        conn = await Conn.open(port)
        head = call_bytes(envoy, path=AUTH + "/v1/x", method="HEAD")
        await conn.send(head + call_bytes(envoy, path=AUTH + "/open/x", close=True))
        refused = await conn.answer(head_only=True)
        assert refused.status == 402 and int(refused.headers["content-length"]) > 0, port
        after = await conn.answer()
        assert after.status == 200, (port, after)
        assert await conn.eof()


async def test_get_auth_call_for_a_head_request_gets_the_body(gw):
    """A GET auth call describing a HEAD request (X-Forwarded-Method: HEAD): the proxy reads a
    body, so the answer has one, as on the main port."""
    for port in (main_port(gw), lean_port(gw)):
        conn = await Conn.open(port)
        await conn.send(call_bytes(forwarded("/v1/x", "HEAD"), close=True))
        answer = await conn.answer()
        assert answer.status == 402 and answer.json()["ways_out"], port
        assert await conn.eof()


UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
    "Sec-WebSocket-Version": "13",
}


@pytest.mark.parametrize("evidence", [False, True])
async def test_call_carrying_the_clients_upgrade_headers_gets_one_answer(gw, evidence):
    """A forward-auth call for a WebSocket handshake may carry the client's Upgrade headers:
    it gets the main port's verdict (never a 101), one answer and no second one, then the
    listener may close (the bytes after an upgrade are not HTTP to its parser)."""
    extra = {"Authorization": f"PoP {human_session(gw)}"} if evidence else {}
    call = call_bytes({**forwarded("/ws"), **extra, **UPGRADE})
    answers = []
    for port in (main_port(gw), lean_port(gw)):
        conn = await Conn.open(port)
        await conn.send(call)
        answer = await conn.answer()
        answers.append((answer.status, answer.headers.get("pop-class")))
        if port == lean_port(gw):
            assert await conn.eof(), "nothing after the one answer"
        else:
            conn.writer.close()
    assert answers[0] == answers[1] == ((200, "human") if evidence else (402, None))


async def test_pipelined_calls_before_a_malformed_one_are_answered_first(gw):
    """Good calls pipelined ahead of bytes that are not HTTP get their own answers, in order;
    then the 400 for the garbage, and the connection closes (a proxy must never read the
    400 as the answer to an earlier call)."""
    token = human_session(gw)
    conn = await Conn.open(lean_port(gw))
    good = call_bytes(forwarded(Authorization=f"PoP {token}")) + call_bytes(forwarded("/v1/x"))
    await conn.send(good + b"NOT HTTP AT ALL\x00\r\n\r\n")
    first, second, third = [await conn.answer() for _ in range(3)]
    assert (first.status, first.headers.get("pop-class")) == (200, "human")
    assert second.status == 402
    assert third.status == 400 and third.json()["reason"] == "malformed_request"
    assert await conn.eof()


def hold(gw: Running, seconds: float) -> asyncio.Event:
    """Hold every allowed call ``seconds`` in an enforcer the test adds (the pipeline's own
    extension point); the event is set when a call is held."""
    entered = asyncio.Event()

    async def slow(ctx: Any) -> None:
        entered.set()
        await asyncio.sleep(seconds)

    gw.gateway.enforce.enforcers.append(slow)  # type: ignore[attr-defined]
    return entered


async def test_refusal_while_a_call_is_in_flight_comes_after_its_answer(gw):
    """A call is being answered (held 0.5 s) when the next request on the connection turns out
    too big (431): the held call's answer comes first, then the 431, then the close."""
    entered = hold(gw, 0.5)
    conn = await Conn.open(lean_port(gw))
    await conn.send(call_bytes(forwarded(Authorization=f"PoP {human_session(gw)}")))
    await asyncio.wait_for(entered.wait(), ANSWER_TIMEOUT)
    await conn.send(call_bytes([(f"X-H{i}", "v") for i in range(150)]))
    first, second = [await conn.answer() for _ in range(2)]
    assert (first.status, first.headers.get("pop-class")) == (200, "human")
    assert (second.status, second.json()["reason"]) == (431, "headers_too_large")
    assert await conn.eof()


async def test_a_call_that_waits_keeps_its_place_and_its_context(gw):
    """A call that waits (held 0.2 s in an enforcer that sets a context variable first) sees its
    own value when it goes on, and the calls pipelined behind it (refusals that need no wait,
    another held call) are answered after it, in order."""
    var: contextvars.ContextVar[str] = contextvars.ContextVar("seen")
    seen: list[tuple[str, str]] = []

    async def slow(ctx: Any) -> None:
        mine = ctx.request.headers.get("X-Mark", "")
        var.set(mine)
        await asyncio.sleep(0.2)
        seen.append((mine, var.get()))

    gw.gateway.enforce.enforcers.append(slow)  # type: ignore[attr-defined]
    session = f"PoP {human_session(gw)}"
    calls = [
        call_bytes(forwarded(Authorization=session, **{"X-Mark": "a"})),
        call_bytes(forwarded("/v1/x")),
        call_bytes(forwarded(Authorization=session, **{"X-Mark": "b"})),
        call_bytes(forwarded("/v1/x"), close=True),
    ]
    conn = await Conn.open(lean_port(gw))
    await conn.send(b"".join(calls))
    answers = [await conn.answer() for _ in calls]
    assert [a.status for a in answers] == [200, 402, 200, 402]
    assert seen == [("a", "a"), ("b", "b")]
    assert await conn.eof()


# 6. Limits and timeouts --------------------------------------------------------------------------

LIMITS = """
[limits]
max_header_bytes = 8192
max_header_count = 20
client_header_timeout = 0.5
client_keepalive_timeout = 1.0
"""


@pytest.fixture
async def tight(upstream: str, gateway_factory: Any) -> Running:
    running: Running = await gateway_factory(upstream, server_extra=listen_extra(), extra=LIMITS)
    return running


async def _refused(port: int, data: bytes) -> RawResponse:
    conn = await Conn.open(port)
    await conn.send(data)
    answer = await conn.answer()
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.headers["connection"] == "close"
    assert answer.json()["status"] == answer.status
    assert await conn.eof()
    return answer


async def test_limits_are_431_413_400_and_close(tight):
    port = lean_port(tight)
    long_line = call_bytes(forwarded(Cookie="a=" + "x" * 8200))
    assert (await _refused(port, long_line)).status == 431
    many = call_bytes([*forwarded().items(), *((f"X-H{i}", "v") for i in range(30))])
    assert (await _refused(port, many)).status == 431
    long_target = call_bytes(forwarded(), path=AUTH + "/" + "a" * 8200)
    assert (await _refused(port, long_target)).status == 431
    big = call_bytes({"X-Popgate-Auth": "render"}, method="POST", body=b"x" * (MAX_SEALED + 1))
    too_big = await _refused(port, big)
    assert (too_big.status, too_big.json()["reason"]) == (413, "body_too_large")
    for garbage in (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n"):
        answer = await _refused(port, garbage)
        assert (answer.status, answer.json()["reason"]) == (400, "malformed_request")
    answer = await _refused(port, b"GET http://a.example/x HTTP/1.1\r\nHost: a\r\n\r\n")
    assert answer.status == 400
    conn = await Conn.open(port)  # a body of exactly the limit is read, then the call is answered
    await conn.send(call_bytes({"X-Popgate-Auth": "render"}, method="POST", body=b"x" * MAX_SEALED))
    assert (await conn.answer()).status == 503


async def test_slow_head_gets_408(tight):
    """A head not whole within client_header_timeout (0.5 s; swept every second): 408, then EOF."""
    conn = await Conn.open(lean_port(tight))
    await conn.send(f"GET {AUTH} HTTP/1.1\r\nHost: popgate.internal\r\nX-Forwarded-Uri: /a\r\n".encode())
    started = time.monotonic()
    answer = await conn.answer(timeout=5)
    assert answer.status == 408 and answer.json()["reason"] == "request_timeout"
    assert 0.5 <= time.monotonic() - started < 5
    assert await conn.eof()


def _trickle(port: int, every: float = 0.2, most: float = 6.0) -> tuple[bytes, float]:
    """Send a head's first line, then one more header line every ``every`` seconds until
    something arrives; read to EOF. (A blocking socket: the answer survives a write that
    races the server's close, which an asyncio stream would drop.)"""
    with socket.create_connection(("127.0.0.1", port), timeout=most) as sock:
        sock.sendall(f"GET {AUTH} HTTP/1.1\r\n".encode())
        started = time.monotonic()
        sock.settimeout(every)
        data, i = b"", 0
        while time.monotonic() - started < most:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                with contextlib.suppress(OSError):
                    sock.sendall(f"X-T{i}: v\r\n".encode())
                i += 1
                continue
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data, time.monotonic() - started


async def test_trickled_head_still_gets_408(tight):
    """Header lines arriving every 0.2 s do not restart the head's clock: 408 within a sweep or
    two of client_header_timeout (0.5 s), then the connection closes."""
    data, elapsed = await asyncio.to_thread(_trickle, lean_port(tight))
    answer = parse(data)
    assert answer.status == 408 and answer.json()["reason"] == "request_timeout"
    assert 0.5 <= elapsed < 3


async def test_idle_connection_closes_after_keepalive_timeout(tight):
    """client_keepalive_timeout = 1 s: a connection idle after an answer, or idle from the
    start, is closed (no answer) within a sweep or two, and not before the timeout."""
    token = session_token(tight)
    used = await Conn.open(lean_port(tight))
    await used.send(call_bytes(forwarded(Authorization=f"PoP {token}")))
    assert (await used.answer()).status == 200
    started = time.monotonic()
    never = await Conn.open(lean_port(tight))
    assert await used.eof(timeout=5)
    assert await never.eof(timeout=5)
    assert 0.9 <= time.monotonic() - started < 5


# 7. Graceful stop --------------------------------------------------------------------------------


async def test_call_in_flight_at_stop_gets_its_answer(upstream, tmp_path):
    """Running.stop() while a call is in flight (held by a slow enforcer the test adds): the call
    gets its whole answer; new connections are refused once stop() began."""
    path = write_config(tmp_path, upstream, server_extra=listen_extra())
    gw = await start(load_config(path))
    stopping: asyncio.Task[None] | None = None
    try:
        entered = hold(gw, 1.0)
        port = lean_port(gw)
        conn = await Conn.open(port)
        await conn.send(call_bytes(forwarded(Authorization=f"PoP {session_token(gw)}")))
        await asyncio.wait_for(entered.wait(), ANSWER_TIMEOUT)
        stopping = asyncio.create_task(gw.stop())
        await asyncio.sleep(0.1)
        with pytest.raises(OSError):
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        answer = await conn.answer()
        assert (answer.status, answer.headers["pop-class"]) == (200, "human")
        assert await conn.eof()
        await asyncio.wait_for(stopping, ANSWER_TIMEOUT)
    finally:
        if stopping is None:
            await gw.stop()


async def test_idle_connections_close_when_stop_begins(upstream, tmp_path):
    """stop() closes idle kept-alive connections at once (a call the proxy sends on one while
    another call drains would otherwise be read, started and cut without an answer); the call
    in flight still gets its answer, then its connection closes."""
    path = write_config(tmp_path, upstream, server_extra=listen_extra())
    gw = await start(load_config(path))
    stopping: asyncio.Task[None] | None = None
    try:
        token = session_token(gw)
        idle = await Conn.open(lean_port(gw))
        await idle.send(call_bytes(forwarded(Authorization=f"PoP {token}")))
        assert (await idle.answer()).status == 200
        entered = hold(gw, 1.0)
        busy = await Conn.open(lean_port(gw))
        await busy.send(call_bytes(forwarded(Authorization=f"PoP {token}")))
        await asyncio.wait_for(entered.wait(), ANSWER_TIMEOUT)
        stopping = asyncio.create_task(gw.stop())
        assert await idle.eof(timeout=0.5), "closed while the held call still drains"
        answer = await busy.answer()
        assert (answer.status, answer.headers["pop-class"]) == (200, "human")
        assert await busy.eof()
        await asyncio.wait_for(stopping, ANSWER_TIMEOUT)
    finally:
        if stopping is None:
            await gw.stop()


async def test_a_taken_auth_port_fails_the_start_and_releases_the_main_port(upstream, tmp_path):
    """The auth listener's port already taken: start() raises, and the proxy and admin ports it
    had bound are free again (nothing half-started is left listening)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        path = write_config(tmp_path, upstream, server_extra=f'{TRUST}\nauth_listen = "127.0.0.1:{busy}"')
        config = load_config(path)
        with pytest.raises(OSError):
            await start(config)
    for port in (config.listen.port, config.admin.port):
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))  # would raise EADDRINUSE if still held
