"""The shipped nginx config (deploy/nginx/popgate-auth.conf) for real: nginx,
the demo origin and popgate in forward-auth mode, all on loopback ports the
test picks. Clients talk to nginx only."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from popgate.gateway import client
from popgate.gateway.http.server import Running
from popgate.gateway.ops.config import load_config
from tests.conftest import session_token, url_of
from tests.gateway.schemes.puzzle_support import puzzle_extra, way
from tests.support.servers import ROOT, free_port, wait_port, write_config

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="nginx: apt-get install nginx-light")

SHIPPED = ROOT / "deploy" / "nginx" / "popgate-auth.conf"
UA = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"}


@contextlib.contextmanager
def nginx(tmp: Path, listen: int, popgate: int, origin: int) -> Iterator[subprocess.Popen[bytes]]:
    """Real nginx running the shipped config, its three addresses pointed at the test's ports."""
    conf = SHIPPED.read_text()
    for old, new in (
        ("server 127.0.0.1:8080;", f"server 127.0.0.1:{popgate};"),
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{origin};"),
        ("listen 80;", f"listen 127.0.0.1:{listen};"),
    ):
        assert conf.count(old) == 1, f"the shipped config should say {old!r} once"
        conf = conf.replace(old, new)
    d = tmp / "nginx"
    d.mkdir()
    (d / "popgate-auth.conf").write_text(conf)
    temps = " ".join(
        f"{kind}_temp_path {d}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (d / "nginx.conf").write_text(
        f"worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn;\n"
        "events { worker_connections 256; }\n"
        f"http {{ access_log off; {temps}\n  include {d}/popgate-auth.conf;\n}}\n"
    )
    proc = subprocess.Popen(
        ["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(listen, proc=proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Stack:
    edge: str  # nginx, what clients talk to
    auth: Running  # popgate, mode = "auth"
    inline: Running  # popgate inline in front of the same origin, same keys: the reference

    def url(self, path: str) -> str:
        return self.edge + path


@pytest.fixture
async def stack(tmp_path: Path, upstream: str, gateway_factory) -> AsyncIterator[Stack]:  # type: ignore[no-untyped-def]
    extra = puzzle_extra(tmp_path)
    inline_path = write_config(
        tmp_path, upstream, extra=extra, server_extra='trusted_proxies = ["127.0.0.1/32"]'
    )
    inline = await gateway_factory(upstream, config=load_config(inline_path))
    text = inline_path.read_text()
    text = re.sub(r'upstream = "[^"]*"', 'mode = "auth"', text)
    text = re.sub(r'listen = "127\.0\.0\.1:\d+"', f'listen = "127.0.0.1:{free_port()}"', text)
    text = re.sub(r'admin = "127\.0\.0\.1:\d+"', f'admin = "127.0.0.1:{free_port()}"', text)
    auth_path = tmp_path / "auth.toml"
    auth_path.write_text(text)
    auth = await gateway_factory("", config=load_config(auth_path))
    listen = free_port()
    origin_port = int(upstream.rsplit(":", 1)[1])
    popgate_port = int(auth.proxy.addresses[0][1])
    with nginx(tmp_path, listen, popgate_port, origin_port):
        yield Stack(f"http://127.0.0.1:{listen}", auth, inline)


def _masked(status: int, headers: aiohttp.typedefs.LooseHeaders, body: bytes) -> tuple[object, ...]:
    """What a client reads from a refusal, with the puzzle's fresh nonce and expiry masked."""
    h = dict(headers)  # type: ignore[arg-type]
    fresh = re.compile(r"pz1\.[\w.-]+|(?<=expires=)\d+|(?<=\"expires\":)\d+")
    keep = ("Content-Type", "WWW-Authenticate", "Cache-Control", "Retry-After", "PAYMENT-REQUIRED")
    return status, {k: fresh.sub("0", h[k]) for k in keep if k in h}, fresh.sub("0", body.decode())


async def test_no_evidence_gets_popgates_402_through_nginx(stack, http):
    """The client gets popgate's 402 problem+json with every way out, as inline mode sends it."""
    headers = {**UA, "Host": "api.example"}
    async with http.post(stack.url("/v1/items?x=1"), headers=headers, data=b"payload") as r:
        via_nginx = _masked(r.status, r.headers, await r.read())
    async with http.post(url_of(stack.inline, "/v1/items?x=1"), headers=headers, data=b"payload") as r:
        inline = _masked(r.status, r.headers, await r.read())
    assert via_nginx[0] == 402
    body = json.loads(str(via_nginx[2]))
    assert [w["kind"] for w in body["ways_out"]] == ["hashcash", "puzzle"]
    assert way(body, "hashcash")["resource"] == "api.example/v1"
    assert via_nginx == inline


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
    assert seen["pop"] == {"PoP-Class": "human", "PoP-Subject": "human:n1", "PoP-Evidence": "session"}
    assert seen["headers"]["Cookie"] == "a=1; b=2"
    assert "X-Hashcash" not in seen["headers"]
    async with http.get(stack.url("/api/x"), headers={**UA, "Authorization": f"PoP {token}"}) as r:
        seen = await r.json()
    assert r.status == 200 and "Authorization" not in seen["headers"]
    assert seen["pop"]["PoP-Class"] == "human"


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
    async with http.get(stack.url("/open/x"), headers=UA) as r:
        assert r.status == 200, "an allowed route is still allowed"
        assert (await r.json())["pop"]["PoP-Class"] == "unknown"


async def test_browser_gets_the_html_challenge_page(stack, http):
    headers = {**UA, "Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
    async with http.get(stack.url("/api/page"), headers=headers) as r:
        assert r.status == 402
        assert r.headers["Content-Type"].startswith("text/html")
        assert "<html" in (await r.text()).lower()


async def test_throttle_is_429_with_retry_after_through_nginx(stack, http):
    codes = []
    for _ in range(3):
        async with http.get(stack.url("/feed"), headers=UA) as r:
            codes.append(r.status)
            retry = r.headers.get("Retry-After")
            body = await r.read()
    assert codes[0] == 200 and codes[-1] == 429
    assert retry is not None and json.loads(body)["reason"] == "rate_limited"


async def test_puzzle_solved_through_nginx_gets_the_client_in(stack, http):
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
    assert seen["pop"]["PoP-Evidence"] == "puzzle"
    assert "Cookie" not in seen["headers"], "the session cookie alone is stripped to nothing"
