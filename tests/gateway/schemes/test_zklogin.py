"""zkLogin-style sessions end to end over loopback HTTP: a JWT signed by a test
RSA key whose JWKS a local aiohttp server serves, an ephemeral Ed25519 key, the
exchange endpoint, then RFC 9421-signed requests through the real gateway."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from popgate.gateway.ops.config import ConfigError
from popgate.gateway.schemes.zklogin_config import parse_settings
from popgate.verifiers.httpsig import RequestView, content_digest, signature_base
from popgate.verifiers.structured_fields import InnerList, Item, serialize_inner_list
from popgate.verifiers.zklogin import compute_nonce
from tests.conftest import url_of
from tests.support.servers import serve_app

ISS, AUD = "https://issuer.popgate.test", "popgate-e2e"
ENDPOINT = "/.well-known/popgate/zklogin"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwk_of(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**d, "kid": kid, "alg": "RS256", "use": "sig"}


class JwksServer:
    def __init__(self) -> None:
        self.hits, self.url = 0, ""
        self.jwks = {"keys": [jwk_of(RSA_KEY, "k1")]}

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        return web.json_response(self.jwks, headers={"Cache-Control": "public, max-age=300"})


@pytest.fixture
async def jwks_server() -> AsyncIterator[JwksServer]:
    srv = JwksServer()
    app = web.Application()
    app.router.add_get("/jwks", srv.handle)
    async with serve_app(app) as port:
        srv.url = f"http://127.0.0.1:{port}/jwks"
        yield srv


def zk_config(jwks_url: str, extra: str = "") -> str:
    return f"""
[zklogin]
allow_http_jwks = true
session_ttl = 600
rate_limit = 5
{extra}
[[zklogin.providers]]
issuer = "{ISS}"
audience = "{AUD}"
jwks_url = "{jwks_url}"
"""


class Client:
    """An OIDC user with an ephemeral key, as a zkLogin wallet would be."""

    def __init__(self, sub: str = "user-1", key: Any = None) -> None:
        self.key = key or ed25519.Ed25519PrivateKey.generate()
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            pk, flag, self.alg = self.key.public_key().public_bytes_raw(), 0, "ed25519"
        else:
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

            pk = self.key.public_key().public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
            flag, self.alg = 2, "ecdsa-p256-sha256"
        self.ext = bytes([flag]) + pk
        self.max_epoch = int(time.time()) + 3600
        self.randomness = int.from_bytes(os.urandom(16), "big")
        self.sub = sub
        self.token = self.keyid = ""

    def id_token(self, **claims: Any) -> str:
        now = int(time.time())
        payload = {
            "iss": ISS,
            "aud": AUD,
            "sub": self.sub,
            "iat": now,
            "exp": now + 600,
            "nonce": compute_nonce(self.ext, self.max_epoch, self.randomness),
            **claims,
        }
        return jwt.encode(payload, RSA_KEY, algorithm="RS256", headers={"kid": "k1"})

    def exchange_body(self, **over: Any) -> dict[str, Any]:
        return {
            "id_token": self.id_token(),
            "ext_eph_pk": base64.b64encode(self.ext).decode(),
            "max_epoch": self.max_epoch,
            "randomness": str(self.randomness),
            **over,
        }

    def sign(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        *,
        keyid: str | None = None,
        created: int | None = None,
        components: tuple[str, ...] | None = None,
        key: Any = None,
    ) -> dict[str, str]:
        headers = {"Authorization": f"PoP {self.token}"}
        if body is not None:
            headers["Content-Digest"] = content_digest(body)
        comps = components or (("@method", "@target-uri") + (("content-digest",) if body else ()))
        created = int(time.time()) if created is None else created
        il = InnerList(
            [Item(c, {}) for c in comps],
            {"created": created, "expires": created + 60, "keyid": keyid or self.keyid, "alg": self.alg},
        )
        base = signature_base(RequestView.build(method, url, headers, body), il)
        k = key or self.key
        if isinstance(k, ed25519.Ed25519PrivateKey):
            sig = k.sign(base)
        else:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

            r, s = decode_dss_signature(k.sign(base, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        return {
            **headers,
            "Signature-Input": f"sig1={serialize_inner_list(il)}",
            "Signature": f"sig1=:{base64.b64encode(sig).decode()}:",
        }


async def login(http: Any, gw: Any, client: Client) -> dict[str, Any]:
    async with http.post(url_of(gw, ENDPOINT), json=client.exchange_body()) as r:
        assert r.status == 200, await r.text()
        data = await r.json()
    client.token, client.keyid = data["token"], data["keyid"]
    return data


async def test_exchange_then_signed_requests_reach_upstream(upstream, gateway_factory, http, jwks_server):
    """JWT + ephemeral key → account session; signed GET and POST reach the origin as `account`."""
    gw = await gateway_factory(upstream, extra=zk_config(jwks_server.url))
    c = Client()
    data = await login(http, gw, c)
    assert data["class"] == "account" and data["subject"].startswith("oidc:")
    assert c.sub not in json.dumps(data), "the raw sub must never be the subject"
    url = url_of(gw, "/api/items?page=2")
    async with http.get(url, headers=c.sign("GET", url)) as r:
        assert r.status == 200, await r.text()
        info = await r.json()
    assert info["pop"] == {"PoP-Class": "account", "PoP-Subject": data["subject"], "PoP-Evidence": "zklogin"}
    body = b'{"hello":"world"}' * 100
    async with http.post(url, data=body, headers=c.sign("POST", url, body)) as r:
        assert r.status == 200, await r.text()
        info = await r.json()
    assert info["body_sha256"] == hashlib.sha256(body).hexdigest()
    assert info["pop"]["PoP-Class"] == "account"
    echo = url_of(gw, "/echo")
    async with http.post(echo, data=body, headers=c.sign("POST", echo, body)) as r:
        assert r.status == 200 and await r.read() == body
    assert jwks_server.hits == 1


async def test_stolen_or_bad_signatures_refused(upstream, gateway_factory, http, jwks_server):
    """Unsigned, wrong key, wrong keyid, stale, uncovered digest or changed body: never through, never 500."""
    gw = await gateway_factory(upstream, extra=zk_config(jwks_server.url))
    c = Client()
    await login(http, gw, c)
    url = url_of(gw, "/api/x")
    body = b"amount=10"
    thief = ed25519.Ed25519PrivateKey.generate()
    now = int(time.time())
    other = Client()
    other.token, other.keyid = c.token, c.keyid
    cases = {
        "unsigned": ("GET", None, {"Authorization": f"PoP {c.token}"}, "signature_required"),
        "other_key": ("GET", None, c.sign("GET", url, key=thief), "bad_signature"),
        "thief_signs_as_self": ("GET", None, other.sign("GET", url), "bad_signature"),
        "wrong_keyid": ("GET", None, c.sign("GET", url, keyid="someone-else"), "unknown_kid"),
        "stale": ("GET", None, c.sign("GET", url, created=now - 3600), "expired"),
        "future": ("GET", None, c.sign("GET", url, created=now + 3600), "not_yet_valid"),
        "no_target_uri": ("GET", None, c.sign("GET", url, components=("@method",)), "missing_component"),
        "no_method": ("GET", None, c.sign("GET", url, components=("@target-uri",)), "missing_component"),
        "other_url": ("GET", None, c.sign("GET", url_of(gw, "/api/y")), "bad_signature"),
        "other_query": ("GET", None, c.sign("GET", url + "?admin=1"), "bad_signature"),
        "other_method": ("DELETE", None, c.sign("GET", url), "bad_signature"),
        "body_changed": ("POST", b"amount=99", c.sign("POST", url, body), "bad_digest"),
        "body_added": ("POST", body, c.sign("POST", url), "missing_component"),
        "digest_not_covered": (
            "POST",
            body,
            {
                **c.sign("POST", url, components=("@method", "@target-uri")),
                "Content-Digest": content_digest(body),
            },
            "missing_component",
        ),
        "garbage_signature": (
            "GET",
            None,
            {**c.sign("GET", url), "Signature": "sig1=:AAAA:"},
            "bad_signature",
        ),
        "garbage_input": ("GET", None, {**c.sign("GET", url), "Signature-Input": "sig1=(((("}, "malformed"),
        "token_tampered": (
            "GET",
            None,
            {**c.sign("GET", url), "Authorization": f"PoP {c.token[:-3]}AAA"},
            "invalid_session",
        ),
    }
    for name, (method, data, headers, reason) in cases.items():
        async with http.request(method, url, data=data, headers=headers) as r:
            assert r.status in (401, 402), (name, r.status, await r.text())
            assert r.headers["Content-Type"].startswith("application/problem+json"), name
            assert (await r.json())["reason"] == reason, name
    # and the good one still works afterwards
    async with http.post(url, data=body, headers=c.sign("POST", url, body)) as r:
        assert r.status == 200


async def test_secp256r1_ephemeral_key(upstream, gateway_factory, http, jwks_server):
    """A secp256r1 (flag 2) ephemeral key works the same way."""
    gw = await gateway_factory(upstream, extra=zk_config(jwks_server.url))
    c = Client(key=ec.generate_private_key(ec.SECP256R1()))
    await login(http, gw, c)
    url = url_of(gw, "/p256")
    async with http.get(url, headers=c.sign("GET", url)) as r:
        assert r.status == 200 and (await r.json())["pop"]["PoP-Class"] == "account"


async def test_exchange_rejections(upstream, gateway_factory, http, jwks_server):
    """Wrong nonce, reused id_token, bad input, a max_epoch beyond max_session: 4xx
    problem+json with the reason; the JWKS is not hammered."""
    gw = await gateway_factory(upstream, extra=zk_config(jwks_server.url))
    c = Client()
    ep = url_of(gw, ENDPOINT)
    good = c.exchange_body()
    async with http.post(ep, json=good) as r:
        assert r.status == 200
    async with http.post(ep, json=good) as r:
        assert r.status == 401 and (await r.json())["reason"] == "replayed"
    async with http.post(ep, json=c.exchange_body(randomness="1")) as r:
        assert r.status == 401 and (await r.json())["reason"] == "nonce_mismatch"
    async with http.post(ep, data=b"not json") as r:
        assert r.status == 400
    async with http.get(ep) as r:
        assert r.status == 405
    far = Client()
    far.max_epoch = int(time.time()) + 8 * 86400  # beyond the default max_session of 7 days
    async with http.post(ep, json=far.exchange_body()) as r:
        body = await r.json()
        assert (r.status, body["reason"]) == (401, "max_epoch_too_far"), body


async def test_exchange_rate_limited_per_network(upstream, gateway_factory, http, jwks_server):
    """Past rate_limit exchanges per network, 429 before any JWKS fetch or RSA check."""
    gw = await gateway_factory(upstream, extra=zk_config(jwks_server.url))
    ep = url_of(gw, ENDPOINT)
    statuses = []
    for i in range(8):
        body = Client().exchange_body()
        body["id_token"] = body["id_token"].replace(".", ".x", 1) if i else body["id_token"]
        async with http.post(ep, json=body) as r:
            statuses.append(r.status)
    assert statuses[:5].count(429) == 0 and statuses[5:] == [429, 429, 429]
    assert jwks_server.hits <= 1


async def test_way_out_listed_in_challenge(upstream, gateway_factory, http, jwks_server):
    """An unverified client's 402 names the zkLogin endpoint, issuer and audience."""
    gw = await gateway_factory(upstream, extra=zk_config(jwks_server.url))
    async with http.get(url_of(gw, "/"), headers={"Accept": "application/json"}) as r:
        assert r.status == 402
        ways = (await r.json())["ways_out"]
    zk = [w for w in ways if w["kind"] == "zklogin"]
    assert (
        zk and zk[0]["endpoint"] == ENDPOINT and zk[0]["providers"][0] == {"issuer": ISS, "audiences": [AUD]}
    )


async def test_jwks_file_and_salted_address(upstream, gateway_factory, http, tmp_path: Path):
    """A local JWKS file works; with an operator salt the subject is the zkLogin address."""
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk_of(RSA_KEY, "k1")]}))
    (tmp_path / "salt").write_bytes(os.urandom(32).hex().encode())
    extra = f"""
[zklogin]
salt = {{ secret_file = "{tmp_path / "salt"}" }}
[[zklogin.providers]]
issuer = "{ISS}"
audiences = ["{AUD}"]
jwks_file = "{tmp_path / "jwks.json"}"
"""
    gw = await gateway_factory(upstream, extra=extra)
    c = Client()
    data = await login(http, gw, c)
    assert data["subject"] == "zklogin:" + data["address"] and len(data["address"]) == 66


def test_config_problems_all_reported(tmp_path: Path) -> None:
    """Every [zklogin] problem is reported with its key path, at once."""
    with pytest.raises(ConfigError) as exc:
        parse_settings(
            {
                "epoch_mode": "sui",
                "session_ttl": -1,
                "bogus": 1,
                "salt": {"secret": "x"},
                "jwks_timeout": 0,
                "providers": [
                    {"issuer": "", "jwks_url": "http://x/jwks"},
                    {"issuer": "a", "audience": "b", "jwks_url": "u", "jwks_file": "f"},
                ],
            },
            env={},
        )
    text = "\n".join(exc.value.problems)
    for where in (
        "zklogin.bogus",
        "zklogin.session_ttl",
        "zklogin.jwks_timeout",
        "zklogin.salt.secret",
        "zklogin.providers[0].issuer",
        "zklogin.providers[0].audience",
        "zklogin.providers[0].jwks_url",
        "zklogin.providers[1]: give exactly one",
        "current_epoch, sui_rpc",
    ):
        assert where in text, where


async def test_sui_epoch_mode_with_rpc(upstream, gateway_factory, http, jwks_server):
    """epoch_mode = "sui": max_epoch is checked against the epoch a (local) Sui RPC reports."""

    async def rpc(request: web.Request) -> web.Response:
        assert (await request.json())["method"] == "suix_getLatestSuiSystemState"
        return web.json_response({"jsonrpc": "2.0", "id": 1, "result": {"epoch": "800"}})

    app = web.Application()
    app.router.add_post("/", rpc)
    async with serve_app(app) as port:
        extra = f'epoch_mode = "sui"\nsui_rpc = "http://127.0.0.1:{port}/"'
        gw = await gateway_factory(upstream, extra=zk_config(jwks_server.url, extra))
        ep = url_of(gw, ENDPOINT)
        for max_epoch, status in ((805, 200), (799, 401), (900, 401)):
            c = Client()
            c.max_epoch = max_epoch
            async with http.post(ep, json=c.exchange_body()) as r:
                assert r.status == status, (max_epoch, await r.text())
