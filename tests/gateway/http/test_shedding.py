"""Admission by class under overload (gateway/http/shedding.py): real gateway, real
demo origin, real sockets on loopback; the loop lag is real too (a CPU hog in the
gateway's own event loop)."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from popgate.gateway.http.shedding import (
    CALM,
    CLASSES,
    Admission,
    OverloadConfig,
    admission_class,
    collect_overload,
)
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.ops.validation import Collector
from tests.conftest import admin_url, session_token, url_of
from tests.support.servers import free_port

ALLOW = '[policy]\ndefault = "allow"\n'
COOKIE = "popgate_session="


def problems_of(table: object) -> list[str]:
    problems: list[str] = []
    got = collect_overload(Collector({}, problems), table)
    assert (got is None) == bool(problems)
    return problems


def test_overload_config_defaults_and_every_problem_with_its_key_path():
    problems: list[str] = []
    default = collect_overload(Collector({}, problems), None)
    assert default is not None and default.enabled and default.classes["anonymous"].queue == 0
    assert problems_of({"enabled": False, "classes": {"session": {"in_flight": 8, "queue": 0.1}}}) == []
    got = problems_of(
        {
            "enabled": "yes",
            "loop_lag_high": -1,
            "lag_min_rate": "many",
            "busy_cpu": 2,
            "challenge_min_rate": -1,
            "challenge_window": 120,
            "retry_after": 0,
            "bogus": 1,
            "classes": {"robots": {}, "session": {"in_flight": 0, "queue": "soon", "x": 1}, "proof": 3},
        }
    )
    text = "\n".join(got)
    for where in (
        "overload.enabled",
        "overload.loop_lag_high",
        "overload.lag_min_rate",
        "overload.busy_cpu",
        "overload.challenge_min_rate",
        "overload.challenge_window",
        "overload.retry_after",
        "overload.bogus",
        "overload.classes.robots",
        "overload.classes.session.in_flight",
        "overload.classes.session.queue",
        "overload.classes.session.x",
        "overload.classes.proof",
    ):
        assert f"{where}:" in text, (where, got)
    assert problems_of([1]) == ["overload: expected a table"]


@pytest.mark.parametrize(
    "path,headers,klass",
    [
        ("/api", {}, "anonymous"),
        ("/api", {"Authorization": "PoP abc"}, "session"),
        ("/api", {"Authorization": "pop abc"}, "session"),
        ("/api", {"Cookie": "a=1; popgate_session=x"}, "session"),
        ("/api", {"Cookie": "other=1"}, "anonymous"),
        ("/api", {"Authorization": "Bearer pgk_1_2"}, "payer"),
        ("/api", {"Authorization": "Bearer other"}, "anonymous"),
        ("/api", {"PAYMENT-SIGNATURE": "x"}, "payer"),
        ("/api", {"Signature": "sig1=:x:"}, "payer"),
        ("/api", {"Authorization": "PoP-Puzzle pz1.x"}, "proof"),
        ("/api", {"X-Hashcash": "1:20:x"}, "proof"),
        ("/api", {"Authorization": 'PrivateToken token="x"'}, "proof"),  # a Privacy Pass redemption
        ("/.well-known/popgate/puzzle", {}, "proof"),
        ("/.well-known/popgate/auth", {}, "anonymous"),
        ("/.well-known/popgate/auth", {"Authorization": "PoP x"}, "session"),
    ],
)
def test_admission_class_from_prefixes(path, headers, klass):
    assert admission_class(path, CIMultiDict(headers), COOKIE) == klass


@given(
    st.text(max_size=40),
    st.lists(
        st.tuples(
            st.sampled_from(["Authorization", "Cookie", "Signature", "X-Payment", "X-Other", "PoP-Puzzle"]),
            st.text(max_size=40),
        ),
        max_size=5,
    ),
)
def test_admission_class_never_fails(path, headers):
    assert admission_class(path, CIMultiDict(headers), COOKIE) in CLASSES


async def _get(http: aiohttp.ClientSession, url: str, **kw) -> tuple[int, dict[str, str], bytes, float]:
    t0 = time.monotonic()
    async with http.get(url, **kw) as r:
        return r.status, dict(r.headers), await r.read(), time.monotonic() - t0


async def test_class_bounds_queue_deadlines_and_shed_counts(upstream, gateway_factory, http):
    """anonymous: 2 in flight, no queue; session: 1 in flight, 2 s queue; payer: 1, 0.2 s.
    With two anonymous requests held at a slow origin, a third gets 503 overloaded with
    Retry-After at once (a page for a browser) while a session holder is served; a second
    session request waits for the first one's slot; a payer over its bound is shed after
    its 0.2 s deadline. The shed counts show in /metrics."""
    extra = (
        ALLOW + "[overload]\nretry_after = 3\n[overload.classes]\nanonymous = {in_flight = 2, queue = 0}\n"
        "session = {in_flight = 1, queue = 2.0}\npayer = {in_flight = 1, queue = 0.2}\n"
    )
    gw = await gateway_factory(upstream, extra=extra)
    slow = url_of(gw, "/slow?delay=1")
    held = [asyncio.create_task(_get(http, slow)) for _ in range(2)]
    await asyncio.sleep(0.3)
    status, headers, body, took = await _get(http, url_of(gw, "/x"))
    assert status == 503 and headers["Retry-After"] == "3" and took < 0.5
    assert headers["Content-Type"].startswith("application/problem+json") and b'"overloaded"' in body
    status, headers, body, _ = await _get(http, url_of(gw, "/x"), headers={"Accept": "text/html"})
    assert status == 503 and headers["Content-Type"].startswith("text/html") and b"retry in 3 s" in body
    auth = {"Authorization": f"PoP {session_token(gw)}"}
    first = asyncio.create_task(_get(http, url_of(gw, "/slow?delay=0.6"), headers=auth))
    await asyncio.sleep(0.2)
    status, _, _, took = await _get(http, url_of(gw, "/mine"), headers=auth)
    assert status == 200 and 0.2 < took < 1.5, took  # queued behind the first, then served
    assert (await first)[0] == 200
    pay = {"PAYMENT-SIGNATURE": "not-checked-yet"}
    hold_pay = asyncio.create_task(_get(http, url_of(gw, "/slow?delay=1"), headers=pay))
    await asyncio.sleep(0.2)
    status, _, body, took = await _get(http, url_of(gw, "/x"), headers=pay)
    assert status == 503 and b'"overloaded"' in body and 0.15 < took < 0.8, took
    assert [r[0] for r in await asyncio.gather(*held, hold_pay)] == [200, 200, 200]
    assert (await _get(http, url_of(gw, "/x")))[0] == 200, "slots are given back"
    async with http.get(admin_url(gw, "/metrics")) as r:
        text = await r.text()
    assert 'popgate_shed_total{klass="anonymous"} 2.0' in text
    assert 'popgate_shed_total{klass="payer"} 1.0' in text
    assert 'popgate_shed_total{klass="session"} 0.0' in text


async def hog(stop: asyncio.Event, block: float, *, burn: bool = True) -> None:
    """Hold the event loop ``block`` seconds at a time: real lag for the gateway in this loop,
    burning CPU (its own load) or sleeping (``burn=False``: as when the host preempts it)."""
    while not stop.is_set():
        t0 = time.perf_counter()
        if burn:
            while time.perf_counter() - t0 < block:
                pass
        else:
            time.sleep(block)
        await asyncio.sleep(0.001)


async def test_loop_lag_sheds_anonymous_only(upstream, gateway_factory, http):
    """While the loop lags 100 ms per turn (over loop_lag_high = 30 ms; lag_min_rate = 0: a few
    requests count as busy here), anonymous requests are refused 503 overloaded and session
    holders are all served; once it stops, anonymous requests pass."""
    # busy_cpu = 0: the hog burns CPU, but a loaded test host may give this process little of it
    extra = ALLOW + "[overload]\nloop_lag_high = 0.03\nlag_min_rate = 0\nbusy_cpu = 0\n"
    gw = await gateway_factory(upstream, extra=extra)
    auth = {"Authorization": f"PoP {session_token(gw)}"}
    stop = asyncio.Event()
    task = asyncio.create_task(hog(stop, 0.1))
    await asyncio.sleep(1.0)  # the lag must last a few probes before it sheds
    try:
        anon = [(await _get(http, url_of(gw, f"/a{i}")))[0] for i in range(10)]
        mine = [(await _get(http, url_of(gw, f"/m{i}"), headers=auth))[0] for i in range(10)]
    finally:
        stop.set()
        await task
    assert anon.count(503) >= 8, anon
    assert mine == [200] * 10
    # shedding holds until the lag has stayed low for CALM probes (about half a second)
    after = []
    for i in range(40):
        await asyncio.sleep(0.1)
        after.append((await _get(http, url_of(gw, f"/after{i}")))[0])
        if after[-1] == 200:
            break
    assert after[-1] == 200 and len(after) <= 20, after


async def test_a_shed_auth_call_keeps_the_proxys_connection(upstream, gateway_factory, http):
    """Shedding for lag closes a flooder's connection, never the edge proxy's: an anonymous
    forward-auth call shed 503 leaves its connection open, on the main port and on the auth
    listener alike."""
    extra = "[overload]\nloop_lag_high = 0.03\nlag_min_rate = 0\nbusy_cpu = 0\n"
    lean = free_port()
    trusted = f'trusted_proxies = ["127.0.0.1/32"]\nauth_listen = "127.0.0.1:{lean}"'
    gw = await gateway_factory(upstream, extra=extra, server_extra=trusted)
    call = {"X-Popgate-Auth": "subrequest", "X-Forwarded-Uri": "/x", "X-Forwarded-Host": "example.com"}
    stop = asyncio.Event()
    task = asyncio.create_task(hog(stop, 0.1))
    await asyncio.sleep(1.0)  # the lag must last a few probes before it sheds
    try:
        seen = []
        for base in (url_of(gw, ""), f"http://127.0.0.1:{lean}"):
            for _ in range(10):
                status, headers, _, _ = await _get(http, base + "/.well-known/popgate/auth", headers=call)
                seen.append((status, headers.get("Connection", "keep-alive").lower()))
    finally:
        stop.set()
        await task
    shed = [c for status, c in seen if status == 503]
    assert len(shed) >= 16, seen
    assert "close" not in shed, seen


async def test_admission_off_admits_everything(upstream, gateway_factory, http):
    """[overload] enabled = false: no admission control (bounds and lag ignored)."""
    extra = ALLOW + "[overload]\nenabled = false\n[overload.classes]\nanonymous = {in_flight = 1}\n"
    gw = await gateway_factory(upstream, extra=extra)
    assert gw.gateway.admission is None
    stop = asyncio.Event()
    task = asyncio.create_task(hog(stop, 0.06))
    await asyncio.sleep(0.2)
    try:
        codes = await asyncio.gather(*(_get(http, url_of(gw, f"/slow?delay=0.3&i={i}")) for i in range(4)))
    finally:
        stop.set()
        await task
    assert [c[0] for c in codes] == [200] * 4


async def test_lag_without_traffic_sheds_nothing(upstream, gateway_factory, http):
    """A lagging loop with a trickle of requests (a host preempting an idle gateway) is
    not a flood: below lag_min_rate (default 200/s) anonymous requests are still served."""
    gw = await gateway_factory(upstream, extra=ALLOW + "[overload]\nloop_lag_high = 0.03\n")
    stop = asyncio.Event()
    task = asyncio.create_task(hog(stop, 0.1))
    await asyncio.sleep(0.5)
    try:
        codes = [(await _get(http, url_of(gw, f"/a{i}")))[0] for i in range(5)]
        admission = gw.gateway.admission
        lag = admission.lag if admission is not None else 0.0
    finally:
        stop.set()
        await task
    assert lag > 0.03, "the loop did lag"
    assert codes == [200] * 5


async def test_lag_from_a_preempted_process_sheds_nothing(upstream, gateway_factory, http):
    """A loop that lags while the process barely uses the CPU (the host preempts it, here a
    blocking sleep) is not overloaded by its own traffic: shedding would not help, none is done
    (busy_cpu: the default 0.5)."""
    extra = ALLOW + "[overload]\nloop_lag_high = 0.03\nlag_min_rate = 0\n"
    gw = await gateway_factory(upstream, extra=extra)
    stop = asyncio.Event()
    task = asyncio.create_task(hog(stop, 0.1, burn=False))
    await asyncio.sleep(0.5)
    try:
        codes = [(await _get(http, url_of(gw, f"/a{i}")))[0] for i in range(5)]
    finally:
        stop.set()
        await task
    assert codes == [200] * 5


async def test_while_shedding_anonymous_admits_follow_the_lag():
    """Shedding still admits a share of anonymous requests, at a rate the lag steers: it
    falls while the loop lags, climbs back once the loop keeps up, and shedding ends soon
    after the flood does. Session holders are never refused for lag. (The probe's arithmetic
    driven by hand: 10 ms probes, 50 anonymous arrivals each = 5,000/s.)"""
    adm = Admission(OverloadConfig(lag_min_rate=0, busy_cpu=0), Metrics(), "popgate_session")

    async def probe(late: float, arrivals: int) -> int:
        """One probe's worth of anonymous arrivals after a probe that woke ``late`` s late:
        how many were admitted."""
        admitted = 0
        for _ in range(arrivals):
            adm.arrivals, adm.anonymous = adm.arrivals + 1, adm.anonymous + 1
            if await adm.enter("anonymous"):
                admitted += 1
                adm.leave("anonymous")
        adm.sample(late, 0.01 + late, 0.01)
        return admitted

    assert [await probe(0.1, 50) for _ in range(8)][:3] == [50, 50, 50]  # not yet: lag must last
    lagging = [await probe(0.1, 50) for _ in range(20)]
    assert adm._busy and sum(lagging[-10:]) < 0.1 * 500, lagging  # a trickle admitted while it lags
    assert await adm.enter("session")  # never refused for lag
    adm.leave("session")
    calm = [await probe(0.0, 50) for _ in range(200)]
    assert adm._busy and sum(calm[-10:]) > sum(lagging[-10:]), calm  # admits climb back
    ends = 0
    while adm._busy and ends < 5 * CALM:
        await probe(0.0, 0)  # the flood stopped
        ends += 1
    assert not adm._busy and ends <= 2 * CALM
    assert await probe(0.0, 50) == 50
