"""Forward-auth endpoint over real loopback HTTP: the shapes nginx, Traefik,
Caddy and Envoy send, the same answers as inline mode, and who may ask."""

from __future__ import annotations

import ipaddress
import json
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import make_mocked_request
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict

from popgate.gateway.errors import BadRequest, Forbidden
from popgate.gateway.http.forward_auth import AUTH_PATH, auth_call, original_request
from popgate.gateway.ops.config import ConfigError, load_config
from tests.conftest import admin_url, session_token, url_of
from tests.gateway.http.lean import forwarded
from tests.gateway.schemes.puzzle_support import puzzle_extra, way
from tests.support.servers import free_port

TRUST_LOOPBACK = 'trusted_proxies = ["127.0.0.1/32"]'
AUTH = AUTH_PATH


async def test_untrusted_caller_is_refused_with_problem_json(upstream, gateway_factory, http):
    """Anyone but a trusted proxy asking for a verdict gets 403 problem+json, even with a valid session."""
    gw = await gateway_factory(upstream, server_extra='trusted_proxies = ["10.9.9.9/32"]')
    token = session_token(gw)
    headers = forwarded(Authorization=f"PoP {token}")
    async with http.get(url_of(gw, AUTH), headers=headers) as r:
        assert r.status == 403
        assert r.headers["Content-Type"].startswith("application/problem+json")
        body = await r.json(content_type=None)
        assert "PoP-Class" not in r.headers
    assert body["reason"] == "untrusted_caller"


async def test_no_trusted_proxies_means_nobody_may_ask(upstream, gateway_factory, http):
    gw = await gateway_factory(upstream)
    async with http.get(url_of(gw, AUTH), headers=forwarded()) as r:
        assert r.status == 403


async def test_session_holder_is_allowed_with_identity_headers(upstream, gateway_factory, http):
    """Allow: 200 with the PoP-* headers the proxy copies onto the upstream request."""
    gw = await gateway_factory(upstream, server_extra=TRUST_LOOPBACK)
    token = session_token(gw, "human", subject="human:abc")
    headers = forwarded(Cookie=f"a=1; popgate_session={token}", **{"PoP-Class": "agent"})
    async with http.get(url_of(gw, AUTH), headers=headers) as r:
        assert r.status == 200
        assert r.headers["PoP-Class"] == "human"
        assert r.headers["PoP-Subject"] == "human:abc"
        assert r.headers["PoP-Evidence"] == "session"
        assert r.headers["Cache-Control"] == "private, max-age=30", "[forward_auth] cache_ttl's default"
        assert r.headers["X-Accel-Expires"] == "30"
        assert await r.read() == b""
        assert r.headers["Server"] == "popgate", "no versions, even to the proxy"
        no_browser = ("X-Content-Type-Options", "Referrer-Policy")
        assert not any(h in r.headers for h in no_browser), "only the proxy reads an allow"
    short = session_token(gw, "human", ttl=7)
    async with http.get(url_of(gw, AUTH), headers=forwarded(Authorization=f"PoP {short}")) as r:
        assert r.headers["X-Accel-Expires"] in ("6", "7"), "never past the session's expiry"


def _comparable(status: int, headers: dict[str, str], body: bytes) -> tuple[object, ...]:
    """Status, the headers clients read and the body, with the puzzle's fresh nonce masked."""
    keep = ("Content-Type", "WWW-Authenticate", "Cache-Control", "PAYMENT-REQUIRED", "Retry-After")
    fresh = re.compile(r"pz1\.[\w.-]+|(?<=expires=)\d+|(?<=\"expires\":)\d+")
    masked = {k: fresh.sub("0", headers[k]) for k in keep if k in headers}
    return status, masked, fresh.sub("0", body.decode())


async def test_challenge_is_what_inline_mode_sends(upstream, gateway_factory, http, tmp_path):
    """One gateway serves both modes; the 402 for the same request is the same bytes
    (hashcash resource from the forwarded host, puzzle bound to the forwarded client)."""
    gw = await gateway_factory(upstream, server_extra=TRUST_LOOPBACK, extra=puzzle_extra(tmp_path))
    inline_headers = {"Host": "api.example", "X-Forwarded-For": "203.0.113.7"}
    async with http.post(url_of(gw, "/v1/x?q=1"), headers=inline_headers) as r:
        inline = _comparable(r.status, dict(r.headers), await r.read())
    headers = forwarded("/v1/x?q=1", "POST", **{"X-Forwarded-Proto": "http"})
    async with http.get(url_of(gw, AUTH), headers=headers) as r:
        auth = _comparable(r.status, dict(r.headers), await r.read())
    assert inline[0] == 402
    assert [w["kind"] for w in json.loads(str(inline[2]))["ways_out"]] == ["hashcash", "puzzle"]
    assert "api.example/v1" in str(inline[2])
    assert auth == inline


async def test_throttle_counts_the_forwarded_client(upstream, gateway_factory, http, tmp_path):
    """429 with Retry-After as inline; the client is X-Forwarded-For from the trusted proxy, not the proxy."""
    gw = await gateway_factory(upstream, server_extra=TRUST_LOOPBACK, extra=puzzle_extra(tmp_path))
    statuses = []
    for _ in range(3):
        async with http.get(url_of(gw, AUTH), headers=forwarded("/feed")) as r:
            statuses.append(r.status)
            retry = r.headers.get("Retry-After")
    assert statuses[-1] == 429 and retry is not None and 200 in statuses
    other = forwarded("/feed", **{"X-Forwarded-For": "198.51.100.9"})
    async with http.get(url_of(gw, AUTH), headers=other) as r:
        assert r.status == 200, "another network has its own budget"


async def test_browser_gets_the_html_page(upstream, gateway_factory, http):
    gw = await gateway_factory(upstream, server_extra=TRUST_LOOPBACK)
    async with http.get(url_of(gw, AUTH), headers=forwarded(Accept="text/html,*/*")) as r:
        assert r.status == 402
        assert r.headers["Content-Type"].startswith("text/html")
        assert "<html" in await r.text()
        assert r.headers["X-Content-Type-Options"] == "nosniff", "Traefik and Caddy hand it to the client"


async def test_nginx_subrequest_gets_401_and_the_whole_answer(upstream, gateway_factory, http, tmp_path):
    """nginx's auth_request takes 2xx/401/403 only: refusals become 401 + X-Popgate-Decision
    carrying the whole answer: a problem+json 402 as headers nginx returns itself, the browser
    page (and a 400) sealed for the render call, which hands the seal back and gets it as is."""
    gw = await gateway_factory(upstream, server_extra=TRUST_LOOPBACK, extra=puzzle_extra(tmp_path))
    sub = {"X-Popgate-Auth": "subrequest"}
    async with http.get(url_of(gw, AUTH), headers=forwarded("/v1/x")) as r:
        direct = _comparable(r.status, dict(r.headers), await r.read())
    async with http.get(url_of(gw, AUTH), headers=forwarded("/v1/x", **sub)) as r:
        assert (r.status, r.headers["X-Popgate-Decision"]) == (401, "challenge")
        assert r.headers["X-Accel-Expires"] == "0" and await r.read() == b""
        assert "X-Content-Type-Options" not in r.headers, "nginx reads it; the client never sees it"
        assert "X-Popgate-Verdict" not in r.headers
        plain = CIMultiDict(
            (k[len("X-Popgate-R-") :], v) for k, v in r.headers.items() if k.startswith("X-Popgate-R-")
        )
        plain["Content-Type"] = "application/problem+json"  # nginx's default_type there
        as_nginx_returns = _comparable(
            int(r.headers["X-Popgate-Status"]), plain, r.headers["X-Popgate-Body"].encode()
        )
    assert direct[0] == 402 and as_nginx_returns == direct
    html = {"Accept": "text/html,*/*"}
    async with http.get(url_of(gw, AUTH), headers=forwarded("/v1/x", **sub, **html)) as r:
        assert "X-Popgate-Body" not in r.headers
        seal = r.headers["X-Popgate-Verdict"]
    async with http.post(url_of(gw, AUTH), headers={"X-Popgate-Auth": "render"}, data=seal) as r:
        rendered = _comparable(r.status, dict(r.headers), await r.read())
    async with http.get(url_of(gw, AUTH), headers=forwarded("/v1/x", **html)) as r:
        direct = _comparable(r.status, dict(r.headers), await r.read())
    assert rendered[0] == 402 and rendered == direct and "<html" in str(direct[2])
    token = session_token(gw)
    async with http.get(url_of(gw, AUTH), headers=forwarded(Authorization=f"PoP {token}", **sub)) as r:
        assert (r.status, r.headers["PoP-Class"]) == (200, "human")
    bad = forwarded(**sub)
    bad["X-Forwarded-Method"] = "G ET"
    async with http.get(url_of(gw, AUTH), headers=bad) as r:
        assert (r.status, r.headers["X-Popgate-Decision"]) == (401, "error")
        seal = r.headers["X-Popgate-Verdict"]
    async with http.post(url_of(gw, AUTH), headers={"X-Popgate-Auth": "render"}, data=seal) as r:
        assert r.status == 400 and (await r.json(content_type=None))["reason"] == "bad_forward_auth"


async def test_render_without_a_good_seal_is_503_never_a_blank_200(upstream, gateway_factory, http):
    """The render call decides nothing: no seal, a forged or foreign one is 503 (retry), not an answer."""
    gw = await gateway_factory(upstream, server_extra=TRUST_LOOPBACK)
    sub = forwarded(**{"X-Popgate-Auth": "subrequest", "Accept": "text/html"})
    async with http.get(url_of(gw, AUTH), headers=sub) as r:
        seal = r.headers["X-Popgate-Verdict"]
    v, kid, exp, payload, mac = seal.split(".")
    token = session_token(gw)
    render = forwarded(Authorization=f"PoP {token}", **{"X-Popgate-Auth": "render"})
    for body in (b"", b"junk", f"{v}.{kid}.{int(exp) + 60}.{payload}.{mac}".encode(), b"x" * 70000):
        async with http.post(url_of(gw, AUTH), headers=render, data=body) as r:
            assert r.status == 503
            assert (await r.json(content_type=None))["reason"] == "verdict_expired"
            assert "PoP-Class" not in r.headers


async def test_envoy_ext_authz_shape(upstream, gateway_factory, http, tmp_path):
    """Envoy's HTTP ext_authz (deploy/forward-auth/envoy.yaml): the original method, the original
    :authority as Host, path_prefix + the original path, the client's headers."""
    gw = await gateway_factory(upstream, server_extra=TRUST_LOOPBACK, extra=puzzle_extra(tmp_path))
    scoped = gw.gateway.services.sessions.issue(
        klass="human", subject="human:s", now=gw.gateway.clock(), ttl=300, scope="/api/"
    )
    envoy = {
        "Host": "api.example",
        "X-Forwarded-For": "203.0.113.7",
        "X-Forwarded-Proto": "https",
        "X-Request-Id": "9b1f0c1e-0000-4000-8000-000000000001",
        "X-Envoy-Expected-Rq-Timeout-Ms": "2000",
        "X-Envoy-Internal": "true",
        "Content-Length": "0",
    }
    async with http.delete(url_of(gw, AUTH + "/api/items/1?x=1"), headers=envoy) as r:
        assert r.status == 402
        body = await r.json(content_type=None)
    assert way(body, "hashcash")["resource"] == "api.example/default", "Host is the original authority"
    envoy["Authorization"] = f"PoP {scoped}"
    async with http.delete(url_of(gw, AUTH + "/api/items/1?x=1"), headers=envoy) as r:
        assert (r.status, r.headers["PoP-Class"]) == (200, "human")
    async with http.delete(url_of(gw, AUTH + "/admin/1"), headers=envoy) as r:
        assert r.status == 402, "the session's scope is checked against the original path"


async def test_traefik_forward_auth_shape(upstream, gateway_factory, http):
    """Traefik's forwardAuth (deploy/forward-auth/traefik-*.yml): GET to the endpoint, the original request in
    X-Forwarded-*; the session scope is checked against X-Forwarded-Uri, not the auth path."""
    gw = await gateway_factory(upstream, server_extra=TRUST_LOOPBACK)
    scoped = gw.gateway.services.sessions.issue(
        klass="human", subject="human:s", now=gw.gateway.clock(), ttl=300, scope="/api/"
    )
    traefik = {
        "Authorization": f"PoP {scoped}",
        "X-Forwarded-Port": "443",
        "X-Forwarded-Server": "traefik-1",
        "X-Real-Ip": "203.0.113.7",
        "Accept-Encoding": "gzip",
    }
    async with http.get(url_of(gw, AUTH), headers=forwarded("/api/a", "PUT", **traefik)) as r:
        assert (r.status, r.headers["PoP-Subject"]) == (200, "human:s")
    async with http.get(url_of(gw, AUTH), headers=forwarded("/other", "PUT", **traefik)) as r:
        assert r.status == 402


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("X-Forwarded-Method", "G\tET"),
        ("X-Forwarded-Uri", "no-slash"),
        ("X-Forwarded-Uri", "/a b"),
        ("X-Forwarded-Host", "a b"),
        ("X-Forwarded-Proto", "gopher"),
        ("X-Popgate-Auth", "maybe"),
    ],
)
async def test_malformed_forward_auth_headers_are_400_problem_json(
    upstream, gateway_factory, http, name, value
):
    gw = await gateway_factory(upstream, server_extra=TRUST_LOOPBACK)
    headers = forwarded()
    headers[name] = value
    async with http.get(url_of(gw, AUTH), headers=headers) as r:
        assert r.status == 400
        assert (await r.json(content_type=None))["reason"] == "bad_forward_auth"


async def test_repeated_forward_auth_header_is_refused(upstream, gateway_factory, http):
    gw = await gateway_factory(upstream, server_extra=TRUST_LOOPBACK)
    headers = [*forwarded().items(), ("X-Forwarded-Uri", "/other")]
    async with http.get(url_of(gw, AUTH), headers=headers) as r:
        assert r.status == 400


async def test_auth_mode_needs_no_upstream_and_proxies_nothing(tmp_path, gateway_factory, http):
    """``mode = "auth"``: config validates without an origin; only popgate's endpoints answer."""
    config = _auth_mode_config(tmp_path)
    gw = await gateway_factory("", config=config)
    async with http.get(url_of(gw, "/api/x")) as r:
        assert r.status == 404
        assert (await r.json(content_type=None))["reason"] == "auth_mode"
    async with http.get(url_of(gw, AUTH), headers=forwarded()) as r:
        assert r.status == 402
    token = session_token(gw)
    async with http.get(url_of(gw, AUTH), headers=forwarded(Authorization=f"PoP {token}")) as r:
        assert (r.status, r.headers["PoP-Class"]) == (200, "human")
    async with http.get(admin_url(gw, "/readyz")) as r:
        assert (r.status, await r.json()) == (200, {"store": "ok"}), "no origin to wait for"


def _auth_mode_config(tmp: Path, server: str = 'trusted_proxies = ["127.0.0.1/32"]'):  # type: ignore[no-untyped-def]
    (tmp / "k1").write_bytes(b"k" * 40)
    path = tmp / "auth.toml"
    path.write_text(f"""
[server]
mode = "auth"
listen = "127.0.0.1:{free_port()}"
admin = "127.0.0.1:{free_port()}"
{server}
[store]
url = "memory://"
[sessions]
keys = [{{kid = "k1", secret_file = "{tmp / "k1"}"}}]
""")
    return load_config(path)


def test_auth_mode_config_problems(tmp_path):
    """An origin in auth mode, or no trusted proxy to believe, is a config error naming the key."""
    with pytest.raises(ConfigError) as err:
        _auth_mode_config(tmp_path, 'upstream = "http://127.0.0.1:1"')
    text = str(err.value)
    assert "server.upstream" in text and "server.trusted_proxies" in text
    with pytest.raises(ConfigError, match=r"server\.mode"):
        load_config(None, {"server.mode": "sidecar", "server.upstream": "http://127.0.0.1:1"}, env={})


@given(
    method=st.text(max_size=40),
    uri=st.text(max_size=60),
    host=st.text(max_size=40),
    proto=st.text(max_size=10),
)
def test_auth_call_parses_or_refuses(method, uri, host, proto):
    """Whatever the forward-auth headers hold: a rebuilt request carrying exactly them, or BadRequest."""
    headers = {"X-Forwarded-Method": method, "X-Forwarded-Uri": uri, "X-Forwarded-Host": host}
    headers["X-Forwarded-Proto"] = proto
    try:
        request = make_mocked_request("GET", AUTH, headers={k: v for k, v in headers.items() if _latin(v)})
    except ValueError:
        return
    trusted = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
    client = ipaddress.ip_address("203.0.113.7")
    try:
        auth_call(_with_peer(request), trusted)
    except Forbidden:
        pytest.fail("a trusted peer was refused")
    try:
        rebuilt = original_request(_with_peer(request), client)
    except BadRequest:
        return
    if method.strip():
        assert rebuilt.method == method.strip().upper()
    assert rebuilt.raw_path == uri.strip() or not uri.strip()
    assert rebuilt.host == (host.strip() or rebuilt.headers.get("Host", ""))
    assert rebuilt.remote == "203.0.113.7"
    assert rebuilt.scheme in ("http", "https")


def _latin(value: str) -> bool:
    return all(0x20 <= ord(c) < 0x7F for c in value)


def _with_peer(request):  # type: ignore[no-untyped-def]
    return request.clone(remote="127.0.0.1")
