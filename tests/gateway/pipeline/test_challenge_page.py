"""The challenge page without a browser: escaping, safe return paths, panels,
languages, CSP and branding config, the vendored widget's recorded hash."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.ops.validation import Collector
from popgate.gateway.pipeline import challenge_page as cp
from popgate.gateway.pipeline import page_i18n, page_settings
from tests.conftest import url_of

STATIC = cp.STATIC
ROOT = Path(__file__).resolve().parents[3]
PUZZLE = ("puzzle", {"challenge": "pz1.k1.abc.def", "bits": 16, "subs": 1, "expires": 1790000300})
SIGNIN = ("signin", {"provider": "Example <ID>", "href": "/.well-known/popgate/oidc/ex/start"})
PAY = (
    "pay",
    {"accepts": [{"network": "eip155:84532", "amount": "10000", "payTo": "0xab", "extra": {"name": "USDC"}}]},
)


def page(ways=(PUZZLE,), lang: str = "en", path: str = "/docs?page=2") -> str:
    return cp.ChallengePage().page(lang, list(ways), path, "http://gw.example" + path)


def test_page_data_panels_and_no_raw_labels() -> None:
    """Puzzle data in the JSON block; sign-in, pay and credits panels; zklogin not shown."""
    html = page((PUZZLE, SIGNIN, PAY, ("credits", {"price": 5}), ("zklogin", {"endpoint": "/x"})))
    data = json.loads(re.search(r'id="popgate-data">(.*?)</script>', html, re.S).group(1))  # type: ignore[union-attr]
    assert data["puzzle"]["challenge"] == "pz1.k1.abc.def" and data["return"] == "/docs?page=2"
    assert 'href="/.well-known/popgate/oidc/ex/start?return=/docs%3Fpage%3D2"' in html
    assert "Sign in with Example &lt;ID&gt;" in html
    assert "0.01 USDC on eip155:84532" in html and "PAYMENT-SIGNATURE" in html
    assert "costs 5 credits" in html and "Bearer &lt;api key&gt;" in html
    assert "zklogin" not in html.lower() and 'href="#"' not in html
    assert "<script>" not in html and "65,536" in html and "{{" not in html
    assert "<noscript>" in html and "solve.py" in html and 'name="solution"' in html


def test_script_data_cannot_break_out() -> None:
    """A hostile value in the JSON block stays data (no </script>)."""
    html = page((("puzzle", {**PUZZLE[1], "challenge": "</script><script>alert(1)</script>"}),))
    assert html.count("</script>") == 2  # challenge.js + the data block


@pytest.mark.parametrize(
    "path, expected",
    [
        ("/ok/path?x=1", "/ok/path?x=1"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("javascript:alert(1)", "/"),
        ("", "/"),
        ("/a b", "/"),
    ],
)
def test_return_path_is_local(path: str, expected: str) -> None:
    assert cp.safe_return_path(path) == expected


def test_signin_href_must_be_local() -> None:
    html = page((PUZZLE, ("signin", {"provider": "x", "href": "https://evil.example/start"})))
    assert "evil.example" not in html


@given(st.text(max_size=600))
def test_accept_language_parser_never_fails(header: str) -> None:
    assert page_i18n.choose(header) in page_i18n.LANGS


@pytest.mark.parametrize(
    "header, cookie, lang",
    [
        ("de-CH, de;q=0.9, en;q=0.5", None, "de"),
        ("xx, pt-BR;q=0.8, fr;q=0.7", None, "pt"),
        ("fr;q=0.1, ja;q=0.9", None, "ja"),
        ("zh-Hans-CN", None, "zh"),
        ("de;q=0, es", None, "es"),
        ("", None, "en"),
        ("de", "fr", "fr"),
        ("de", "xx", "de"),
    ],
)
def test_language_choice(header: str, cookie: str | None, lang: str) -> None:
    assert page_i18n.choose(header, cookie) == lang


@pytest.mark.parametrize("lang", page_i18n.LANGS)
def test_every_language_renders(lang: str) -> None:
    """Every catalogue has English's keys and placeholders (checked at load) and renders."""
    html = page((PUZZLE, SIGNIN), lang=lang)
    assert f'<html lang="{lang}">' in html and page_i18n.messages(lang)["heading"] in html


def test_csp_is_strict() -> None:
    csp = cp.ChallengePage().csp
    assert "script-src 'self';" in csp and "unsafe" not in csp and "frame-ancestors 'none'" in csp
    assert "connect-src 'self' https://bridge.worldcoin.org" in csp


def settings(table: dict) -> tuple[page_settings.PageSettings, list[str]]:
    problems: list[str] = []
    s = page_settings.collect_settings(Collector({}, problems), table)
    return s, problems


def test_branding_config_validated_with_key_paths() -> None:
    s, problems = settings(
        {
            "title": "Example",
            "logo_url": "https://cdn.example/logo.svg",
            "contact": "help@example.com",
            "colors": {"accent": "#0b57d0"},
        }
    )
    assert problems == [] and s.colors["accent"] == "#0b57d0"
    html = cp.ChallengePage(s).page("en", [PUZZLE], "/", "http://gw/")
    assert "<title>Example: " in html and 'src="https://cdn.example/logo.svg"' in html
    assert "help@example.com" in html and "--pg-accent:#0b57d0" in html
    assert "img-src 'self' data: https://cdn.example;" in cp.ChallengePage(s).csp
    _, problems = settings(
        {
            "logo_url": "javascript:alert(1)",
            "colors": {"text": "#ffffff", "accent": "red", "bogus": "#000"},
            "worldid_bridge": "http://bridge.example/x",
            "extra": 1,
        }
    )
    joined = "\n".join(problems)
    for path in (
        "page.logo_url",
        "page.colors.text:",
        "page.colors.accent",
        "page.colors.bogus",
        "page.worldid_bridge",
        "page.extra",
    ):
        assert path in joined, (path, joined)


def test_vendored_idkit_matches_its_record() -> None:
    """The committed widget is the file the vendor script recorded (and the npm package's)."""
    rec = json.loads((STATIC / "vendor" / "idkit.json").read_text())
    assert rec["package"] == "@worldcoin/idkit-standalone" and rec["version"] == "2.2.2"
    body = (STATIC / "vendor" / "idkit-standalone.js").read_bytes()
    assert hashlib.sha256(body).hexdigest() == rec["sha256"]
    lic = (STATIC / "vendor" / "idkit-standalone.LICENSE").read_bytes()
    assert hashlib.sha256(lic).hexdigest() == rec["license_sha256"]
    # IDKit 4 (core + WASM + licence) and the QR encoder: pinned versions, committed bytes = record
    assert (rec["core"]["package"], rec["core"]["version"]) == ("@worldcoin/idkit-core", "4.3.0")
    assert (rec["qrcode"]["package"], rec["qrcode"]["version"]) == ("qrcode-generator", "2.0.4")
    for part in ("core", "qrcode"):
        for name, digest in rec[part]["sha256"].items():
            assert hashlib.sha256((STATIC / "vendor" / name).read_bytes()).hexdigest() == digest, name
    check = subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "vendor" / "vendor_idkit.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert check.returncode == 0, check.stdout + check.stderr


async def test_headers_and_language_endpoint(upstream, gateway_factory, http, tmp_path) -> None:
    """Own answers: Server without versions, nosniff, no referrer; the switcher sets a cookie."""
    from tests.gateway.pipeline.page_support import page_extra

    gw = await gateway_factory(upstream, extra=page_extra(tmp_path))
    async with http.get(url_of(gw, "/docs"), headers={"Accept": "text/html"}) as r:
        assert r.status == 402 and r.headers["Server"] == "popgate"
        assert (
            r.headers["X-Content-Type-Options"] == "nosniff" and r.headers["Referrer-Policy"] == "no-referrer"
        )
        assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    async with http.get(url_of(gw, "/docs"), headers={"Accept": "application/json"}) as r:
        assert r.status == 402 and r.headers["Server"] == "popgate"
    lang = url_of(gw, "/.well-known/popgate/lang?l=ja&return=//evil.example/")
    async with http.get(lang, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/"
        assert "popgate_lang=ja" in r.headers["Set-Cookie"]
    async with http.get(url_of(gw, "/.well-known/popgate/lang?l=xx"), allow_redirects=False) as r:
        assert r.status == 400
    async with http.get(url_of(gw, "/.well-known/popgate/static/challenge.js")) as r:
        assert r.status == 200 and r.headers["X-Content-Type-Options"] == "nosniff"
    async with http.get(url_of(gw, "/.well-known/popgate/static/idkit-standalone.js")) as r:
        assert r.status == 200 and len(await r.read()) > 500_000


async def test_pay_and_credits_panels_from_real_way_outs(upstream, gateway_factory, http, tmp_path) -> None:
    """A charged route with [x402] and [credits]: the page names amount, network, recipient,
    the credit price and gives copyable curl lines; no '#' links."""
    from tests.gateway.payments.test_credits import PAY_TO, credits_gateway

    gw = await credits_gateway(gateway_factory, upstream, tmp_path, fac="http://127.0.0.1:9")
    async with http.get(url_of(gw, "/paid/x"), headers={"Accept": "text/html"}) as r:
        assert r.status == 402
        html = await r.text()
    assert f"Price: 0.01 USDC on eip155:84532, paid to {PAY_TO}." in html
    assert "This request costs 10000 credits" in html and "Bearer &lt;api key&gt;" in html
    assert "PAYMENT-SIGNATURE: &lt;base64 x402 payment payload&gt;" in html
    assert 'href="#"' not in html and 'class="copy js-only"' in html


async def test_origin_without_server_header_gets_no_aiohttp_version(gateway_factory, http, tmp_path) -> None:
    """An origin that sends no Server header: the client sees ``popgate``, not aiohttp's
    ``Python/x aiohttp/y`` (an origin's own Server header passes unchanged)."""
    import asyncio

    from tests.gateway.schemes.puzzle_support import puzzle_extra

    async def bare(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(bare, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        gw = await gateway_factory(f"http://127.0.0.1:{port}", extra=puzzle_extra(tmp_path))
        async with http.get(url_of(gw, "/open/x")) as r:
            assert r.status == 200 and await r.text() == "ok"
            assert r.headers["Server"] == "popgate"
    finally:
        server.close()
        await server.wait_closed()
