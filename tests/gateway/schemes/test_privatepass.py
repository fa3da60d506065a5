"""Privacy Pass end to end: @cloudflare/privacypass-ts (tests/node) runs the issuer over HTTP
and the client; popgate offers the challenge in its 402, fetches the issuer directory and
redeems the token. Two gateways share one real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from popgate.gateway.ops.config import ConfigError, load_config
from tests.conftest import url_of
from tests.gateway.schemes.fleet_support import fleet_configs
from tests.support.node import NODE_DIR, node_binary, run_node
from tests.support.servers import free_port, serve_app, write_config

ISSUER = "issuer.popgate.test"
SCRIPT = NODE_DIR / "privatepass.mjs"


class NodeIssuer:
    def __init__(self, proc: subprocess.Popen[str], url: str, token_key: str) -> None:
        self.proc, self.url, self.token_key = proc, url, token_key


@pytest.fixture
def node_issuer() -> Iterator[NodeIssuer]:
    """privacypass-ts's Issuer behind node:http on a loopback port."""
    port = free_port()
    proc = subprocess.Popen(
        [node_binary(), str(SCRIPT), "serve", str(port), ISSUER],
        cwd=NODE_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"issuer did not start: {proc.stderr.read() if proc.stderr else ''}")
        ready = json.loads(line)
        yield NodeIssuer(proc, f"http://127.0.0.1:{port}", ready["token_key"])
    finally:
        proc.terminate()
        proc.wait(10)


def pp_extra(directory: str, extra: str = "") -> str:
    return f"""
[privatepass]
allow_http_directories = true
session_ttl = 600
challenge_window = 300
{extra}
[[privatepass.issuers]]
name = "{ISSUER}"
directory = "{directory}"
"""


async def client(url: str, redeem: list[str], origin_info: list[str] | None = None) -> Any:
    """The node client, in a thread: the gateways it talks to run on this test's event loop."""
    job = {"url": url, "redeem": redeem, "origin_info": origin_info}
    return await asyncio.to_thread(run_node, SCRIPT, "client", stdin=job)


async def test_privacypass_ts_issues_and_redeems_once_across_two_gateways(
    node_issuer, upstream, redis_url, tmp_path, gateway_factory
):
    """The 402 offers a PrivateToken challenge; privacypass-ts gets a token from its issuer and
    redeems it: the first gateway lets it through as `human` with a session, the second
    gateway (same Redis) and the first again refuse the same token (spent once)."""
    a_cfg, b_cfg = fleet_configs(tmp_path, upstream, store=redis_url, extra=pp_extra(node_issuer.url))
    a, b = await gateway_factory(upstream, config=a_cfg), await gateway_factory(upstream, config=b_cfg)
    out = await client(url_of(a, "/api/x"), [url_of(a, "/api/x"), url_of(b, "/api/x"), url_of(a, "/api/x")])
    assert out["first_status"] == 402
    assert out["way"]["class"] == "human" and out["way"]["challenges"][0]["issuer"] == ISSUER
    assert out["way"]["challenges"][0]["token_key"].rstrip("=") == node_issuer.token_key.rstrip("=")
    first, second, third = out["answers"]
    assert first["status"] == 200, first
    seen = json.loads(first["body"])
    assert seen["pop"]["PoP-Class"] == "human" and seen["pop"]["PoP-Evidence"] == "privatepass"
    assert "authorization" not in {k.lower() for k in seen["headers"]}  # the token never reaches the origin
    session = first["headers"]["pop-session"]
    assert "popgate_session=" in first["headers"]["set-cookie"]
    for again in (second, third):
        assert again["status"] == 402, again
        assert json.loads(again["body"])["reason"] == "replayed"
    # the session the token bought works at either gateway
    async with aiohttp.ClientSession() as s:
        for gw in (a, b):
            async with s.get(url_of(gw, "/api/y"), headers={"Authorization": f"PoP {session}"}) as r:
                assert r.status == 200
                assert (await r.json())["pop"]["PoP-Class"] == "human"


async def test_token_for_another_origin_is_refused(node_issuer, upstream, tmp_path, gateway_factory):
    """A valid token from the same issuer, but for a challenge naming another origin, does not
    redeem here (`wrong_challenge`)."""
    gw = await gateway_factory(upstream, extra=pp_extra(node_issuer.url))
    out = await client(url_of(gw, "/api/x"), [url_of(gw, "/api/x")], origin_info=["other.example"])
    (answer,) = out["answers"]
    assert answer["status"] == 402
    assert json.loads(answer["body"])["reason"] == "wrong_challenge"


async def test_configured_session_class_and_static_keys(node_issuer, upstream, tmp_path, gateway_factory):
    """With token_keys from config (no directory fetch by popgate) and session_class =
    "account", a redeemed token makes the request an `account`."""
    extra = f"""
[privatepass]
session_class = "account"
[[privatepass.issuers]]
name = "{ISSUER}"
token_keys = ["{node_issuer.token_key}"]
"""
    gw = await gateway_factory(upstream, extra=extra)
    job = {"url": url_of(gw, "/x"), "redeem": [url_of(gw, "/x")], "issuer": node_issuer.url}
    out = await asyncio.to_thread(run_node, SCRIPT, "client", stdin=job)
    assert "issuer_directory" not in out["way"]["challenges"][0]
    (answer,) = out["answers"]
    assert answer["status"] == 200, answer
    assert json.loads(answer["body"])["pop"]["PoP-Class"] == "account"


def test_config_problems_have_key_paths(tmp_path: Path) -> None:
    """Every [privatepass] problem is reported at once with its key path."""
    bad = """
[privatepass]
session_class = "backed-agent"
challenge_window = 1
[[privatepass.issuers]]
name = "x"
directory = "http://insecure.example"
[[privatepass.issuers]]
name = "y"
token_keys = ["bm90IGEga2V5"]
"""
    with pytest.raises(ConfigError) as e:
        load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=bad))
    text = "\n".join(e.value.problems)
    for path in (
        "privatepass.session_class",
        "privatepass.challenge_window",
        "privatepass.issuers[0].directory",
        "privatepass.issuers[1].token_keys[0]",
    ):
        assert path in text, text


async def test_issuer_directory_outage_keeps_the_last_keys(upstream, gateway_factory, http):
    """The directory is fetched at start; when the issuer then fails (500), tokens under the
    keys already fetched still redeem; a directory that never answered makes the way out vanish
    and a token `issuer_unavailable`."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    from popgate.verifiers.privatepass import b64u, parse_challenge

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    state = {"up": True, "hits": 0}

    async def directory(request: web.Request) -> web.Response:
        state["hits"] += 1
        if not state["up"]:
            return web.Response(status=500)
        keys = [{"token-type": 2, "token-key": b64u(spki)}]
        return web.json_response(
            {"issuer-request-uri": "/x", "token-keys": keys}, headers={"Cache-Control": "max-age=1"}
        )

    app = web.Application()
    app.router.add_get("/.well-known/private-token-issuer-directory", directory)
    async with serve_app(app) as port:
        gw = await gateway_factory(upstream, extra=pp_extra(f"http://127.0.0.1:{port}", "directory_ttl = 1"))
        state["up"] = False
        await asyncio.sleep(1.1)  # the keys are stale now: the next use re-fetches, and fails

        async def redeem() -> tuple[int, Any]:
            async with http.get(url_of(gw, "/api/x")) as r:
                way = next(w for w in (await r.json())["ways_out"] if w["kind"] == "privatepass")
            raw = b64u_bytes(way["challenges"][0]["challenge"])
            token_input = (
                b"\x00\x02" + os.urandom(32) + hashlib.sha256(raw).digest() + hashlib.sha256(spki).digest()
            )
            pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
            token = b64u(token_input + key.sign(token_input, pss, hashes.SHA384()))
            assert parse_challenge(raw).issuer_name == ISSUER
            async with http.get(
                url_of(gw, "/api/x"), headers={"Authorization": f"PrivateToken token={token}"}
            ) as r:
                return r.status, await r.json()

        status, seen = await redeem()
        assert status == 200 and seen["pop"]["PoP-Evidence"] == "privatepass"
        assert state["hits"] >= 2  # it did try again
        dead = await gateway_factory(upstream, extra=pp_extra(f"http://127.0.0.1:{port}"))
        async with http.get(url_of(dead, "/api/x")) as r:
            assert all(w["kind"] != "privatepass" for w in (await r.json())["ways_out"])
        blank = b64u(b"\x00\x02" + bytes(352))  # a type-2 token of the right length
        async with http.get(
            url_of(dead, "/api/x"), headers={"Authorization": f"PrivateToken token={blank}"}
        ) as r:
            assert r.status == 402 and (await r.json())["reason"] == "issuer_unavailable"


def b64u_bytes(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


async def test_challenge_status_401_for_apple_clients(upstream, gateway_factory, http, node_issuer):
    """challenge_status = 401: the challenge comes as 401 (problem+json and the browser page
    alike) with the PrivateToken header; privacypass-ts answers it and gets through."""
    extra = f"""
[privatepass]
challenge_status = 401
[[privatepass.issuers]]
name = "{ISSUER}"
token_keys = ["{node_issuer.token_key}"]
"""
    gw = await gateway_factory(upstream, extra=extra)
    async with http.get(url_of(gw, "/api/x")) as r:
        body = await r.json(content_type=None)
        assert r.status == 401 and body["status"] == 401
        assert "PrivateToken challenge=" in r.headers["WWW-Authenticate"]
        assert any(w["kind"] == "privatepass" for w in body["ways_out"])
    async with http.get(url_of(gw, "/api/x"), headers={"Accept": "text/html"}) as r:
        assert r.status == 401 and "PrivateToken " in r.headers["WWW-Authenticate"]
    job = {"url": url_of(gw, "/api/x"), "redeem": [url_of(gw, "/api/x")], "issuer": node_issuer.url}
    out = await asyncio.to_thread(run_node, SCRIPT, "client", stdin=job)
    assert out["first_status"] == 401 and out["answers"][0]["status"] == 200, out["answers"]
