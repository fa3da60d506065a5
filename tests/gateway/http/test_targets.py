"""Request-target forms and host normalization through a real gateway and origin:
the policy sees the path and host the origin will be sent (gateway/http/target.py)."""

from __future__ import annotations

import pytest

from tests.conftest import session_token
from tests.gateway.http.raw import exchange, request_bytes
from tests.gateway.schemes.puzzle_support import puzzle_extra, way

POLICY = """
[default]
all = "allow"

[[rules]]
name = "admin"
path = "/admin/**"
action = "deny"

[[rules]]
name = "secret"
host = ["secret.example", "bücher.example"]
action = "deny"

[[rules]]
name = "v1"
path = ["/v1", "/v1/**"]
[rules.actions]
unknown = { kind = "challenge", ways = ["hashcash", "puzzle"], min_bits = 20 }
agent = { kind = "challenge", ways = ["hashcash", "puzzle"], min_bits = 20 }
"""


@pytest.fixture(params=["lean", "aiohttp"])
def client_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def gw(upstream, gateway_factory, tmp_path, client_kind):
    running = await gateway_factory(
        upstream,
        extra=puzzle_extra(tmp_path, policy=POLICY),
        server_extra=f'upstream_client = "{client_kind}"',
    )
    return running.proxy.addresses[0][1]


async def send(port: int, line: str, host: str | None = "public.example", *more: tuple[str, str]):
    headers = [("Host", host)] if host is not None else []
    return await exchange(port, request_bytes(line, [*headers, *more]))


async def test_absolute_form_meets_the_path_rules(gw):
    """``GET http://x/admin/users`` is denied like ``/admin/users``; an allowed one
    reaches the origin in origin-form, its path normalized."""
    denied = await send(gw, "GET http://x/admin/users HTTP/1.1")
    assert denied.status == 403, "an absolute-form target must not slip past a path rule"
    assert denied.headers["content-type"] == "application/problem+json"
    dotted = await send(gw, "GET http://x/open/../admin/users HTTP/1.1")
    assert dotted.status == 403
    ok = await send(gw, "GET http://x/open/./a/%7Eb?q=1#frag HTTP/1.1")
    assert ok.status == 200
    assert ok.json()["target"] == "/open/a/~b?q=1", "the origin gets origin-form, no fragment"


async def test_absolute_form_gets_the_routes_own_challenge(gw):
    """The stricter route's work is asked for, scoped to the target's own authority
    (RFC 9112 §3.2.2: it wins over Host)."""
    r = await send(gw, "GET http://API.Example.:8443/v1/items HTTP/1.1", "other.example")
    assert r.status == 402
    body = r.json()
    assert way(body, "hashcash")["resource"] == "api.example/v1"
    assert way(body, "hashcash")["bits"] >= 20 and way(body, "puzzle")["bits"] >= 20


@pytest.mark.parametrize(
    "line, status, reason",
    [
        ("CONNECT secret.example:443 HTTP/1.1", 405, "method_not_allowed"),
        ("OPTIONS * HTTP/1.1", 400, "bad_target"),
        ("GET ftp://x/admin HTTP/1.1", 400, "bad_target"),
        ("GET http://user:pw@x/open/a HTTP/1.1", 400, "bad_target"),
    ],
)
async def test_other_target_forms_are_refused(gw, line, status, reason):
    """CONNECT is a 405 (with Allow), ``OPTIONS *`` and odd schemes a 400: problem+json,
    never a path handed to the policy or the origin."""
    r = await send(gw, line)
    assert r.status == status
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["reason"] == reason
    if status == 405:
        assert "GET" in r.headers["allow"]


@pytest.mark.parametrize(
    "host",
    [
        "secret.example.",
        "SECRET.example",
        "secret.example:8080",
        "Secret.Example.:80",
        "bücher.example",
        "xn--bcher-kva.example",
        "BÜCHER.example.",
    ],
)
async def test_host_spellings_meet_the_host_rule(gw, host):
    """Every spelling of a denied host is that host (case, trailing dot, port, IDNA)."""
    assert (await send(gw, "GET /open/a HTTP/1.1", host)).status == 403


async def test_absolute_form_authority_wins_over_host(gw):
    r = await send(gw, "GET http://secret.example./open/a HTTP/1.1", "public.example")
    assert r.status == 403
    r = await send(gw, "GET http://public.example/open/a HTTP/1.1", "secret.example")
    assert r.status == 200


@pytest.mark.parametrize("host", ["a b", "a..b", "[::1", "h:99999", "x!y", "a:b:c", "bad_%41.example"])
async def test_invalid_host_is_400(gw, host):
    r = await send(gw, "GET /open/a HTTP/1.1", host)
    assert r.status == 400
    assert r.headers["content-type"] == "application/problem+json"
    assert r.json()["reason"] == "bad_host"


async def test_forwarded_host_is_normalized(gw):
    r = await send(gw, "GET /open/a HTTP/1.1", "Public.EXAMPLE.:8080")
    assert r.status == 200
    assert r.json()["headers"]["X-Forwarded-Host"] == "public.example:8080"
    r = await send(gw, "GET http://[2001:DB8:0::1]/open/a HTTP/1.1", "public.example")
    assert r.json()["headers"]["X-Forwarded-Host"] == "[2001:db8::1]"


async def test_hashcash_resource_uses_the_normalized_host(gw):
    r = await send(gw, "GET /v1/x HTTP/1.1", "API.example.:9000")
    assert r.status == 402
    assert way(r.json(), "hashcash")["resource"] == "api.example/v1"


async def test_session_scope_sees_the_normalized_path(upstream, gateway_factory):
    """A session scoped to ``/api`` does not cover ``/api/../admin`` (the origin resolves
    that to ``/admin``)."""
    running = await gateway_factory(upstream)
    port = running.proxy.addresses[0][1]
    token = session_token(running, "human", scope="/api")
    auth = ("Authorization", f"PoP {token}")
    inside = await send(port, "GET /api/things HTTP/1.1", "h", auth)
    assert inside.status == 200
    outside = await send(port, "GET /api/../admin HTTP/1.1", "h", auth)
    assert outside.status != 200, "a scoped session must not reach outside its scope"
