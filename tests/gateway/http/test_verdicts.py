"""Forward-auth verdicts: which allows an edge may reuse (asked of a real gateway
over loopback), and the sealed refusals the render call hands back."""

from __future__ import annotations

from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.http.forward_auth import AUTH_PATH, plain_answer
from popgate.gateway.http.verdicts import SEAL_TTL, Sealer
from popgate.gateway.ops.config import ConfigError, load_config
from tests.conftest import session_token, url_of
from tests.gateway.http.lean import forwarded
from tests.gateway.http.test_forward_auth import TRUST_LOOPBACK
from tests.gateway.schemes.puzzle_support import POLICY, puzzle_extra
from tests.support.servers import write_config

SEALER = Sealer({"k1": b"a" * 32, "k0": b"b" * 32}, "k1")
UA_RULE = """
[[rules]]
name = "curl"
user_agent = "(?i)curl"
action = "deny"
"""


async def _reuse(http, gw, uri: str, **headers: str) -> str:  # type: ignore[no-untyped-def]
    async with http.get(url_of(gw, AUTH_PATH), headers=forwarded(uri, **headers)) as r:
        assert r.status == 200, await r.text()
        seconds = str(r.headers["X-Accel-Expires"])
        assert r.headers["Cache-Control"] == (f"private, max-age={seconds}" if seconds != "0" else "no-store")
        return seconds


async def test_only_allows_decided_by_credential_and_target_are_reusable(
    upstream, gateway_factory, http, tmp_path
):
    gw = await gateway_factory(upstream, server_extra=TRUST_LOOPBACK, extra=puzzle_extra(tmp_path))
    codec, now = gw.gateway.services.sessions, gw.gateway.clock()

    def token(**kw: object) -> str:
        return codec.issue(klass="human", subject="human:r", now=now, ttl=600, **kw)  # type: ignore[arg-type]

    plain = f"PoP {token()}"
    assert await _reuse(http, gw, "/api/x", Authorization=plain) == "30"
    assert await _reuse(http, gw, "/api/x", Cookie=f"popgate_session={token()}") == "30"
    assert await _reuse(http, gw, "/api/x", Authorization=f"PoP {token(budget=9)}") == "0", "budget counted"
    assert (
        await _reuse(http, gw, "/api/x", Authorization=f"PoP {token(binding='net:203.0.113.0/24')}") == "0"
    ), "bound"
    assert await _reuse(http, gw, "/feed", Authorization=plain) == "0", "a throttle step was taken"
    assert await _reuse(http, gw, "/open/x") == "0", "no credential: nothing to key a reuse on"
    assert await _reuse(http, gw, "/api/x", Authorization=plain, **{"X-Hashcash": "1:8:x"}) == "0"


async def test_a_user_agent_rule_the_policy_reaches_makes_the_allow_not_reusable(
    upstream, gateway_factory, http, tmp_path
):
    extra = puzzle_extra(tmp_path, policy=POLICY + UA_RULE)
    gw = await gateway_factory(upstream, server_extra=TRUST_LOOPBACK, extra=extra)
    plain = f"PoP {session_token(gw, ttl=600)}"
    assert await _reuse(http, gw, "/api/x", Authorization=plain) == "0", "another UA may be denied"
    assert await _reuse(http, gw, "/open/x", Authorization=plain) == "30", "/open decides before the UA rule"
    assert await _reuse(http, gw, "/v1/x", Authorization=plain) == "30", "decided by path before the UA rule"


async def test_cache_ttl_bounds_reuse_and_zero_turns_it_off(upstream, gateway_factory, http, tmp_path):
    gw = await gateway_factory(upstream, server_extra=TRUST_LOOPBACK, extra="[forward_auth]\ncache_ttl = 5\n")
    assert await _reuse(http, gw, "/x", Authorization=f"PoP {session_token(gw, ttl=600)}") == "5"
    off = await gateway_factory(
        upstream, server_extra=TRUST_LOOPBACK, extra="[forward_auth]\ncache_ttl = 0\n"
    )
    assert await _reuse(http, off, "/x", Authorization=f"PoP {session_token(off, ttl=600)}") == "0"


def test_forward_auth_config_problems_name_their_key(tmp_path, upstream):
    bad = '[forward_auth]\ncache_ttl = -1\ninline_routes = ["nope", 3]\nextra = 1\n'
    path = write_config(tmp_path, upstream, extra=bad)
    try:
        load_config(path)
    except ConfigError as exc:
        text = str(exc)
    else:
        raise AssertionError("accepted")
    for where in ("forward_auth.cache_ttl", "forward_auth.inline_routes", "forward_auth.extra"):
        assert where in text
    path = write_config(
        tmp_path, upstream, extra=puzzle_extra(tmp_path) + '[forward_auth]\ninline_routes = ["nope"]'
    )
    try:
        load_config(path)
    except ConfigError as exc:
        assert "forward_auth.inline_routes[0]: no policy route 'nope'" in str(exc)
    else:
        raise AssertionError("accepted an unknown route")
    path = write_config(
        tmp_path, upstream, extra=puzzle_extra(tmp_path) + '[forward_auth]\ninline_routes = ["feed"]'
    )
    assert load_config(path).features.forward_auth.inline_routes == frozenset({"feed"})


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)


@given(
    status=st.sampled_from([400, 401, 402, 403, 404, 429, 503]),
    headers=st.lists(
        st.tuples(
            st.sampled_from(["WWW-Authenticate", "Retry-After", "PAYMENT-REQUIRED", "X-A"]), header_text
        ),
        max_size=5,
    ),
    body=st.binary(max_size=3000),
)
def test_a_seal_opens_to_the_same_answer(status, headers, body):
    response = web.Response(status=status, body=body, content_type="application/problem+json")
    for name, value in headers:
        response.headers.add(name, value.strip())
    opened = SEALER.open(SEALER.seal(response, 1000.0), 1000.0 + SEAL_TTL)
    assert opened is not None
    assert (opened.status, opened.body) == (status, body)
    assert list(opened.headers.items()) == [
        (k, v) for k, v in response.headers.items() if k.lower() != "content-length"
    ]


@given(st.text(max_size=300))
def test_opening_anything_else_is_none_never_an_exception(token):
    assert SEALER.open(token, 1000.0) is None


def test_stale_foreign_or_altered_seals_do_not_open():
    seal = SEALER.seal(web.Response(status=402, text="pay"), 1000.0)
    assert SEALER.open(seal, 1000.0 + SEAL_TTL + 1) is None, "stale"
    assert Sealer({"k1": b"c" * 32}, "k1").open(seal, 1000.0) is None, "another key"
    v, kid, exp, payload, mac = seal.split(".")
    assert SEALER.open(f"{v}.k0.{exp}.{payload}.{mac}", 1000.0) is None
    assert SEALER.open(f"{v}.{kid}.{exp}.{payload[:-2]}AA.{mac}", 1000.0) is None
    rotated = Sealer({"k0": b"b" * 32, "k1": b"a" * 32}, "k0")
    assert rotated.open(seal, 1000.0) is not None, "a gateway that still accepts the kid opens it"


def test_plain_answers_are_only_what_the_nginx_config_can_return_whole():
    """402/403/429 problem+json with a one-line ASCII body and only the headers the nginx
    config copies; anything else goes sealed (None here)."""

    def problem(status: int = 402, body: bytes = b'{"a":1}', **headers: str) -> web.Response:
        r = web.Response(status=status, body=body, content_type="application/problem+json")
        for k, v in headers.items():
            r.headers.add(k.replace("_", "-"), v)
        return r

    plain = plain_answer(problem(WWW_Authenticate='PoP realm="popgate"', Cache_Control="no-store"))
    assert plain == {
        "X-Popgate-Status": "402",
        "X-Popgate-Body": '{"a":1}',
        "X-Popgate-R-www-authenticate": 'PoP realm="popgate"',
        "X-Popgate-R-cache-control": "no-store",
    }
    assert plain_answer(problem(429, Retry_After="3")) is not None
    for refused in (
        problem(400),
        problem(body=b'{"a":\n1}'),
        problem(body='{"a":"é"}'.encode()),
        problem(body=b"x" * 9000),
        problem(Set_Cookie="a=1"),
        problem(Payment_Response="x"),
        web.Response(status=402, text="<html>", content_type="text/html"),
    ):
        assert plain_answer(refused) is None
    twice = problem()
    twice.headers.add("WWW-Authenticate", "a")
    twice.headers.add("WWW-Authenticate", "b")
    assert plain_answer(twice) is None, "one header of each name: nginx copies one"
