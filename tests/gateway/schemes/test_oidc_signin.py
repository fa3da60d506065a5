"""Browser sign-in with an OpenID provider (code + PKCE + nonce + state) against a real
oidc-provider (node, one per module), driven through its login form in Chromium."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.ops.config import ConfigError, load_config
from popgate.gateway.schemes.oidc_provider import pkce_challenge
from popgate.gateway.schemes.oidc_signin import check_nonce, safe_return
from popgate.verifiers.errors import VerificationError
from tests.conftest import url_of
from tests.support.browser import ARGS, CHROMIUM, playwright
from tests.support.oidc import id_token, oidc_provider
from tests.support.servers import free_port, write_config

SECRET = "popgate-test-client-secret-0123456789abcdef"
INTRUDER = "intruder-client-secret-0123456789abcdef"
CAPTURE = "http://127.0.0.1:9/capture"  # never contacted: the test stops at the redirect
START = "/.well-known/popgate/oidc/test/start"
CALLBACK = "/.well-known/popgate/oidc/test/callback"
HTML = {"Accept": "text/html"}


@pytest.fixture(scope="module")
def idp() -> Iterator[tuple[str, int]]:
    """(issuer, the gateway port registered in the client's redirect_uri)."""
    gw_port = free_port()
    clients = [
        {
            "client_id": "popgate-test",
            "client_secret": SECRET,
            "redirect_uris": [f"http://127.0.0.1:{gw_port}{CALLBACK}", CAPTURE],
        },
        {"client_id": "intruder", "client_secret": INTRUDER, "redirect_uris": [CAPTURE]},
    ]
    with oidc_provider(clients) as issuer:
        yield issuer, gw_port


def signin_toml(tmp: Path, issuer: str, **extra: str) -> str:
    (tmp / "client-secret").write_text(SECRET)
    more = "".join(f"{k} = {v}\n" for k, v in extra.items())
    return f"""
[zklogin]
allow_http_jwks = true
[[zklogin.providers]]
name = "test"
issuer = "{issuer}"
audience = "popgate-test"
jwks_url = "{issuer}/jwks"
client_id = "popgate-test"
client_secret = {{ secret_file = "{tmp / "client-secret"}" }}
{more}"""


async def start_gateway(
    gateway_factory: Any, upstream: str, tmp: Path, idp: tuple[str, int], **kw: str
) -> Any:
    issuer, port = idp
    trust = 'trusted_proxies = ["127.0.0.1/32"]'  # so a test can speak from another network
    cfg = load_config(
        write_config(tmp, upstream, listen=port, extra=signin_toml(tmp, issuer, **kw), server_extra=trust)
    )
    return await gateway_factory(upstream, config=cfg)


async def test_sign_in_in_chromium_then_replays_and_wrong_state_fail(
    upstream, gateway_factory, tmp_path, idp, http
):
    """402 lists the sign-in → provider's login form → consent → callback → account cookie →
    the origin sees PoP-Class: account. Then: the same callback again, a foreign state and an
    old code in a new flow are each refused with a readable HTML page."""
    gw = await start_gateway(gateway_factory, upstream, tmp_path, idp)
    async with http.get(url_of(gw, "/api/hello")) as r:
        assert r.status == 402
        ways = (await r.json(content_type=None))["ways_out"]
    signin = [w for w in ways if w["kind"] == "signin"]
    assert signin == [{"kind": "signin", "provider": "test", "href": START, "class": "account"}], ways
    callbacks: list[str] = []
    async with playwright()() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            page.on("request", lambda req: callbacks.append(req.url) if CALLBACK in req.url else None)
            await page.goto(url_of(gw, START + "?return=" + quote("/api/hello?x=1", safe="")))
            await page.fill("input[name=login]", "alice")
            await page.fill("input[name=password]", "any password")
            await page.click("button[type=submit]")
            await page.click("button:has-text('Continue')")  # the provider's consent screen
            await page.wait_for_url("**/api/hello?x=1", timeout=20_000)
            info = json.loads(await page.inner_text("body"))
            pop = info["pop"]
            assert pop["PoP-Class"] == "account" and pop["PoP-Evidence"] == "oidc", pop
            assert "alice" not in pop["PoP-Subject"]
            cookies = {c["name"]: c for c in await context.cookies(url_of(gw, "/"))}
            c = cookies["popgate_session"]
            assert c["httpOnly"] and c["sameSite"] == "Lax" and not c["secure"] and c["path"] == "/"
            assert 0 < c["expires"] - time.time() <= 900 + 5  # short TTL
            assert "popgate_oidc" not in cookies  # the flow cookie is cleared
            again = await page.reload()
            assert again is not None and again.status == 200
            session = c["value"]
        finally:
            await browser.close()
    assert len(callbacks) == 1, callbacks
    # the session is bound to the client's network: the same cookie from elsewhere is refused
    for xff, status in (("127.0.0.77", 200), ("203.0.113.5", 402)):
        headers = {"Cookie": f"popgate_session={session}", "X-Forwarded-For": xff}
        async with http.get(url_of(gw, "/api/hello"), headers=headers) as r:
            assert r.status == status, (xff, await r.text())
    query = parse_qs(urlsplit(callbacks[0]).query)
    state, code = query["state"][0], query["code"][0]
    # the whole callback again, even with the flow cookie: the state was spent
    async with http.get(callbacks[0], headers=HTML | {"Cookie": f"popgate_oidc={state}"}) as r:
        text = await r.text()
        assert r.status == 400 and "text/html" in r.headers["Content-Type"] and "already used" in text, text
    # a state that is not this browser's
    async with http.get(
        url_of(gw, f"{CALLBACK}?code={code}&state=AAAA"), headers=HTML | {"Cookie": "popgate_oidc=BBBB"}
    ) as r:
        assert r.status == 400 and "does not belong to this browser" in await r.text()
    # the used code in a new flow of this browser: the provider refuses it
    async with http.get(url_of(gw, START), allow_redirects=False) as r:
        assert r.status == 302 and r.headers["Location"].startswith(idp[0])
        fresh = r.cookies["popgate_oidc"].value
        params = parse_qs(urlsplit(r.headers["Location"]).query)
    assert params["code_challenge_method"] == ["S256"] and params["nonce"] and params["state"] == [fresh]
    async with http.get(
        url_of(gw, f"{CALLBACK}?code={code}&state={fresh}"),
        headers=HTML | {"Cookie": f"popgate_oidc={fresh}"},
    ) as r:
        text = await r.text()
        assert r.status == 400 and "token_exchange_failed" in text, text
    async with http.get(url_of(gw, f"{CALLBACK}?error=access_denied"), headers=HTML) as r:
        assert r.status == 400 and "did not sign you in" in await r.text()


async def test_wrong_audience_and_wrong_nonce_are_refused(upstream, gateway_factory, tmp_path, idp):
    """Real id_tokens from the provider: one made for another client (aud), one for this client
    with another flow's nonce; popgate's sign-in checks refuse both."""
    gw = await start_gateway(gateway_factory, upstream, tmp_path, idp)
    flow = gw.gateway.endpoints[START].__self__
    issuer = idp[0]
    foreign = await id_token(issuer, "intruder", INTRUDER, CAPTURE, nonce="n-1")
    with pytest.raises(VerificationError) as err:
        await flow.verifier.verify(foreign["id_token"], now=time.time(), require_nonce=True)
    assert err.value.reason == "wrong_audience"
    mine = await id_token(issuer, "popgate-test", SECRET, CAPTURE, nonce="n-1")
    claims = await flow.verifier.verify(mine["id_token"], now=time.time(), require_nonce=True)
    check_nonce(claims, "n-1")
    with pytest.raises(VerificationError) as err:
        check_nonce(claims, "n-2")
    assert err.value.reason == "wrong_nonce"


async def test_behind_tls_the_cookie_is_secure_and_the_redirect_uri_https(
    upstream, gateway_factory, tmp_path, idp, http
):
    """A trusted proxy says the client spoke https: the flow cookie is Secure and the
    redirect_uri the provider gets is https (the provider would refuse an unregistered one)."""
    gw = await start_gateway(gateway_factory, upstream, tmp_path, idp)
    headers = {"X-Forwarded-Proto": "https", "Host": "gw.example"}
    async with http.get(url_of(gw, START), headers=headers, allow_redirects=False) as r:
        assert r.status == 302
        cookie = r.headers["Set-Cookie"]
        params = parse_qs(urlsplit(r.headers["Location"]).query)
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie, cookie
    assert "Path=/.well-known/popgate/oidc/" in cookie
    assert params["redirect_uri"] == ["https://gw.example" + CALLBACK], params


async def test_unreachable_discovery_is_a_readable_503(upstream, gateway_factory, tmp_path, idp, http):
    gw = await start_gateway(
        gateway_factory, upstream, tmp_path, idp, discovery_url=json.dumps(idp[0] + "/no-such-document")
    )
    async with http.get(url_of(gw, START), headers=HTML, allow_redirects=False) as r:
        assert r.status == 503 and "text/html" in r.headers["Content-Type"]
        assert "discovery_unavailable" in await r.text()


def test_sign_in_config_is_validated_with_key_paths(tmp_path):
    (tmp_path / "s").write_text("x" * 40)
    bad = f"""
[zklogin]
signin_base_url = "https://gw.example/path"
[[zklogin.providers]]
issuer = "https://a.example"
audience = "a"
jwks_url = "https://a.example/jwks"
client_id = "a"
token_auth = "client_secret_post"
[[zklogin.providers]]
issuer = "https://b.example"
audience = "b"
jwks_url = "https://b.example/jwks"
name = "B!"
client_id = "b"
client_secret = {{ secret_file = "{tmp_path / "s"}" }}
discovery_url = "http://b.example/.well-known/openid-configuration"
scopes = "email"
[[zklogin.providers]]
issuer = "https://c.example"
audience = "c"
jwks_url = "https://c.example/jwks"
token_auth = "none"
"""
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=bad))
    text = str(err.value)
    for path in (
        "zklogin.signin_base_url",
        "zklogin.providers[0].name",
        "zklogin.providers[0].token_auth",
        "zklogin.providers[1].name",
        "zklogin.providers[1].discovery_url",
        "zklogin.providers[1].scopes",
        "zklogin.providers[2].token_auth: only with client_id",
    ):
        assert path in text, (path, text)


def test_pkce_s256_vector():
    """RFC 7636 appendix B."""
    assert (
        pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")
        == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )


@given(st.text(max_size=200))
def test_return_path_never_leaves_the_site(value: str) -> None:
    out = safe_return(value)
    assert out.startswith("/") and not out.startswith("//") and "\\" not in out
    assert urlsplit(out).netloc == "" and urlsplit(out).scheme == ""
    assert out in ("/", value)
