"""Web Bot Auth: requests and a key directory signed by Cloudflare's web-bot-auth /
http-message-sig packages, directory fetching from a loopback server, and the
negative table."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.cli.verify import load_checker, run_cases
from popgate.gateway.stores.base import spend
from popgate.gateway.stores.memory import MemoryStore
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.httpsig import Headers, RequestView, ResponseView, jwk_thumbprint, signature_base
from popgate.verifiers.structured_fields import InnerList, Item, serialize_inner_list
from popgate.verifiers.webbotauth import (
    DIRECTORY_PATH,
    KeyDirectory,
    StaticKey,
    WebBotAuthAttestation,
    WebBotAuthVerifier,
    agent_origin,
    parse_signature_agent,
    static_keys_from_jwks,
)
from tests.support.servers import serve_app

FIX = json.loads(
    (Path(__file__).resolve().parents[1] / "fixtures" / "webbotauth" / "vectors.json").read_text()
)
NOW = FIX["now"]
PUB = {k: {n: v for n, v in jwk.items() if n != "d"} for k, jwk in FIX["keys"].items()}
AGENT_JWKS = {"keys": [PUB["agent"], PUB["rfc9421_ed25519"]]}


def priv(name: str) -> ed25519.Ed25519PrivateKey:
    d = FIX["keys"][name]["d"]
    return ed25519.Ed25519PrivateKey.from_private_bytes(base64.urlsafe_b64decode(d + "=="))


def view_of(r: dict, **headers: str) -> RequestView:
    return RequestView.build(r["method"], r["url"], {**r["headers"], **headers})


def req(name: str) -> dict:
    return next(r for r in FIX["requests"] if r["name"] == name)


async def reason(coro: Any) -> str:
    try:
        await coro
    except VerificationError as e:
        return e.reason
    return "ok"


class Spending:
    """A verifier whose nonces are then claimed in ``store`` (what the gateway does)."""

    def __init__(self, store: MemoryStore, **kw: Any) -> None:
        self.verifier, self.store = WebBotAuthVerifier(**kw), store

    async def verify(self, view: RequestView, *, now: float) -> WebBotAuthAttestation:
        att = await self.verifier.verify(view, now=now)
        if att.spend is not None:
            await spend(self.store, att.spend)
        return att


@pytest.mark.parametrize("r", FIX["requests"], ids=lambda r: r["name"])
async def test_cloudflare_vectors(r: dict) -> None:
    """Every web-bot-auth signed request verifies; the subject is the Signature-Agent authority."""
    v = WebBotAuthVerifier(static=static_keys_from_jwks(AGENT_JWKS))
    att = await v.verify(view_of(r), now=NOW + 10)
    assert att.keyid in (FIX["keyids"]["agent"], FIX["keyids"]["rfc"])
    if "Signature-Agent" in r["headers"]:
        assert att.subject == "signer.example.test" and att.agent == FIX["agent"]
    else:
        assert att.subject == "jwk:" + att.keyid and att.agent is None


def test_thumbprints_match_cloudflare() -> None:
    """Our RFC 7638 thumbprints equal web-bot-auth's jwkToKeyID (incl. the RFC 9421 test key)."""
    assert (
        jwk_thumbprint(PUB["rfc9421_ed25519"])
        == FIX["keyids"]["rfc"]
        == "poqkLGiymh_W0uP6PZFw-dvez3QJT5SolqXBCW38r0U"
    )
    assert jwk_thumbprint(PUB["agent"]) == FIX["keyids"]["agent"]


async def test_static_operator_name() -> None:
    """A static key with an operator name attests that name."""
    static = {k: StaticKey(s.key, "Example Crawler") for k, s in static_keys_from_jwks(AGENT_JWKS).items()}
    att = await WebBotAuthVerifier(static=static).verify(view_of(req("legacy_agent")), now=NOW)
    assert att.subject == "Example Crawler"


NEG = [
    ("unknown key", "no_agent", {}, dict(jwks={"keys": [PUB["other"]]}), "unknown_kid"),
    ("stale", "no_agent", {}, dict(now=NOW + 301), "expired"),
    ("expired", "legacy_agent", {}, dict(now=NOW + 300 + 31), "expired"),
    ("future", "no_agent", {}, dict(now=NOW - 60), "not_yet_valid"),
    (
        "agent tampered",
        "legacy_agent",
        {"Signature-Agent": '"https://evil.example.test"'},
        {},
        "bad_signature",
    ),
    (
        "agent added, not covered",
        "no_agent",
        {"Signature-Agent": '"https://evil.example.test"'},
        {},
        "missing_component",
    ),
    (
        "dict agent tampered",
        "dict_agent",
        {"Signature-Agent": 'agent1="https://evil.example.test"'},
        {},
        "bad_signature",
    ),
    (
        "dict member missing",
        "dict_agent",
        {"Signature-Agent": 'agent2="https://signer.example.test"'},
        {},
        "missing_component",
    ),
    ("agent not https", "legacy_agent", {"Signature-Agent": '"http://signer.example.test"'}, {}, "bad_agent"),
    (
        "signature swapped",
        "legacy_agent",
        {"Signature": req("no_agent")["headers"]["Signature"]},
        {},
        "bad_signature",
    ),
    ("authority changed", "no_agent", {}, dict(url="https://other.example/path?x=1"), "bad_signature"),
]


@pytest.mark.parametrize("name,base,headers,opts,want", NEG, ids=[n[0] for n in NEG])
async def test_negative_table(name: str, base: str, headers: dict, opts: dict, want: str) -> None:
    """Tampered Cloudflare-signed requests fail with stable reasons."""
    r = dict(req(base))
    if "url" in opts:
        r["url"] = opts["url"]
    v = WebBotAuthVerifier(static=static_keys_from_jwks(opts.get("jwks", AGENT_JWKS)))
    assert await reason(v.verify(view_of(r, **headers), now=opts.get("now", NOW + 1))) == want


async def test_replay_and_tag() -> None:
    """A nonce is spent once per store; a signature without the web-bot-auth tag is refused."""
    store = MemoryStore()
    v = Spending(store, static=static_keys_from_jwks(AGENT_JWKS))
    assert await reason(v.verify(view_of(req("post")), now=NOW)) == "ok"
    assert await reason(v.verify(view_of(req("post")), now=NOW + 1)) == "replayed"
    assert await reason(v.verify(view_of(req("no_agent")), now=NOW + 1)) == "ok"
    s = FIX["session"][0]
    assert (
        await reason(
            v.verify(RequestView.build(s["method"], s["url"], s["headers"], s["body"].encode()), now=NOW)
        )
        == "wrong_tag"
    )


# --- key directory -------------------------------------------------------------------------


def directory_response(
    url: str, headers: dict | None = None, body: str | None = None
) -> tuple[Headers, bytes]:
    d = FIX["directory"]
    return Headers(headers or d["headers"]), (body or d["body"]).encode()


def test_directory_vector_verifies() -> None:
    """web-bot-auth's directoryResponseHeaders output: both keys carry valid bindings."""
    h, body = directory_response(FIX["directory"]["url"])
    keys = KeyDirectory.verify_directory(FIX["directory"]["url"], h, body, NOW + 10)
    assert set(keys) == {FIX["keyids"]["agent"], FIX["keyids"]["rfc"]}


def test_directory_bindings_checked_per_key() -> None:
    """A broken binding drops that key only; another authority or expiry drops all."""
    d = FIX["directory"]
    sig = d["headers"]["Signature"].split(", ")
    raw = base64.b64decode(sig[1].split("=:", 1)[1][:-1])
    broken = sig[1].split("=:", 1)[0] + "=:" + base64.b64encode(bytes([raw[0] ^ 1]) + raw[1:]).decode() + ":"
    h = Headers({**d["headers"], "Signature": sig[0] + ", " + broken})
    assert set(KeyDirectory.verify_directory(d["url"], h, d["body"].encode(), NOW)) == {
        FIX["keyids"]["agent"]
    }
    other = "https://evil.example.test" + DIRECTORY_PATH
    assert KeyDirectory.verify_directory(other, Headers(d["headers"]), d["body"].encode(), NOW) == {}
    assert (
        KeyDirectory.verify_directory(d["url"], Headers(d["headers"]), d["body"].encode(), NOW + 86400 + 60)
        == {}
    )


def sign_items(
    pk: ed25519.Ed25519PrivateKey,
    view: RequestView | ResponseView,
    items: list[Item],
    label: str,
    **params: Any,
) -> dict[str, str]:
    il = InnerList(items, params)
    sig = pk.sign(signature_base(view, il))
    return {
        "Signature-Input": f"{label}={serialize_inner_list(il)}",
        "Signature": f"{label}=:{base64.b64encode(sig).decode()}:",
    }


class DirServer:
    def __init__(self) -> None:
        self.hits, self.origin, self.max_age = 0, "", 600

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        url = self.origin + DIRECTORY_PATH
        body = json.dumps(AGENT_JWKS)
        view = ResponseView(200, Headers({}), RequestView.build("GET", url, {}))
        h = sign_items(
            priv("agent"),
            view,
            [Item("@authority", {"req": True})],
            "binding0",
            created=NOW,
            expires=NOW + 3600,
            keyid=FIX["keyids"]["agent"],
            alg="ed25519",
            tag="http-message-signatures-directory",
        )
        return web.Response(
            text=body,
            content_type="application/http-message-signatures-directory+json",
            headers={**h, "Cache-Control": f"max-age={self.max_age}"},
        )


@pytest.fixture
async def dir_server() -> AsyncIterator[DirServer]:
    srv = DirServer()
    app = web.Application()
    app.router.add_get(DIRECTORY_PATH, srv.handle)
    async with serve_app(app) as port:
        srv.origin = f"http://127.0.0.1:{port}"
        yield srv


def agent_request(origin: str, nonce: str, key: str = "agent", created: int = NOW) -> RequestView:
    url, hdrs = "https://origin.example/data", {"Signature-Agent": f'"{origin}"'}
    view = RequestView.build("GET", url, hdrs)
    sig = sign_items(
        priv(key),
        view,
        [Item("@authority", {}), Item("signature-agent", {})],
        "sig1",
        created=created,
        expires=created + 60,
        keyid=jwk_thumbprint(PUB[key]),
        alg="ed25519",
        nonce=nonce,
        tag="web-bot-auth",
    )
    return RequestView.build("GET", url, {**hdrs, **sig})


async def test_directory_fetch_and_cache(dir_server: DirServer) -> None:
    """Keys are fetched from the agent's directory once per max-age; only bound keys count."""
    async with aiohttp.ClientSession() as session:
        directory = KeyDirectory(session, allow_insecure=True)
        v = Spending(MemoryStore(), directory=directory, allow_insecure_agents=True)
        att = await v.verify(agent_request(dir_server.origin, "n1"), now=NOW)
        assert att.subject == dir_server.origin.split("//")[1] and att.agent == dir_server.origin
        await v.verify(agent_request(dir_server.origin, "n2"), now=NOW + 30)
        assert dir_server.hits == 1
        # the RFC key is listed but has no binding signature in this directory: not trusted
        assert (
            await reason(v.verify(agent_request(dir_server.origin, "n3", "rfc9421_ed25519"), now=NOW + 31))
            == "unknown_kid"
        )
        assert await reason(v.verify(agent_request(dir_server.origin, "n2"), now=NOW + 32)) == "replayed"
        await v.verify(agent_request(dir_server.origin, "n4", created=NOW + 600), now=NOW + 601)
        assert dir_server.hits == 2


async def test_directory_unreachable_is_negative_cached() -> None:
    """A dead agent gives unknown_kid and is not refetched before failure_ttl."""
    async with aiohttp.ClientSession() as session:
        directory = KeyDirectory(session, allow_insecure=True, failure_ttl=60)
        v = WebBotAuthVerifier(directory=directory, allow_insecure_agents=True)
        for t in (0, 10, 59):
            assert (
                await reason(v.verify(agent_request("http://127.0.0.1:9", f"x{t}"), now=NOW + t))
                == "unknown_kid"
            )
        assert directory.fetches == 1


@pytest.mark.parametrize(
    "uri",
    [
        "http://a.example",
        "https://127.0.0.1",
        "https://localhost:8443",
        "https://[::1]",
        "ftp://a.example",
        "https://u:p@a.example",
        "https://a.example/?q=1",
        "not a url",
    ],
)
def test_agent_origin_refuses(uri: str) -> None:
    """Without allow_insecure, only https agents on DNS names are fetched (no SSRF to loopback)."""
    with pytest.raises(VerificationError) as e:
        agent_origin(uri)
    assert e.value.reason == "bad_agent"


def test_agent_origin_normalises() -> None:
    assert agent_origin("https://Signer.Example.test/some/path") == "https://signer.example.test"


def test_parse_signature_agent_forms() -> None:
    """Legacy sf-string and dictionary forms; tokens, numbers and inner lists are refused."""
    assert parse_signature_agent('"https://a.example"') == {"": "https://a.example"}
    assert parse_signature_agent('a1="https://a.example", a2="https://b.example"') == {
        "a1": "https://a.example",
        "a2": "https://b.example",
    }
    for bad in ("https://a.example", "a1=1", 'a1=("x")', "", "a1"):
        with pytest.raises(Malformed):
            parse_signature_agent(bad)


@given(st.text(max_size=100))
def test_parse_signature_agent_fuzz(s: str) -> None:
    """Any text: a mapping of strings or Malformed."""
    try:
        out = parse_signature_agent(s)
    except Malformed:
        return
    assert out and all(isinstance(v, str) for v in out.values())


async def test_cli_webbotauth() -> None:
    """`popgate verify webbotauth`: keyid out, replay within one run, unknown key refused."""
    cases = [
        {"method": r["method"], "url": r["url"], "headers": r["headers"], "jwks": AGENT_JWKS, "now": NOW + 5}
        for r in FIX["requests"]
    ]
    cases.append(cases[1])
    cases.append({**cases[0], "jwks": {"keys": [PUB["other"]]}})
    cases.append({**cases[0], "headers": "nope"})
    out = io.StringIO()
    await run_cases(load_checker("webbotauth"), None, io.StringIO("\n".join(map(json.dumps, cases))), out)
    res = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [r["reason"] for r in res] == ["ok"] * 5 + ["replayed", "unknown_kid", "malformed"]
    assert res[0]["keyid"] == FIX["keyids"]["agent"] and res[1]["subject"] == "signer.example.test"
