"""Web Bot Auth end to end over loopback HTTP: requests signed by Cloudflare's
web-bot-auth (fixtures) and by our signer with the fixture keys reach the origin
as ``verified-agent``; key directories come from a real local aiohttp server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from popgate.gateway.ops.config import ConfigError
from popgate.gateway.schemes.webbotauth import parse_settings
from popgate.verifiers.httpsig import RequestView, jwk_thumbprint
from popgate.verifiers.structured_fields import Item
from tests.conftest import url_of
from tests.verifiers.test_webbotauth import (
    NOW,
    PUB,
    priv,
    req,
    sign_items,
)


def static_config(operator: str | None = None, extra: str = "") -> str:
    x = PUB["agent"]["x"]
    op = f'\noperator = "{operator}"' if operator else ""
    return f"""
[webbotauth]
{extra}
[[webbotauth.keys]]
jwk = {{ kty = "OKP", crv = "Ed25519", x = "{x}" }}{op}
"""


async def at_fixture_time(gateway_factory: Any, upstream: str, extra: str) -> Any:
    gw = await gateway_factory(upstream, extra=extra)
    gw.gateway.clock = lambda: NOW + 5  # the fixtures were signed at NOW
    return gw


async def send_fixture(http: Any, gw: Any, name: str, **headers: str) -> tuple[int, Any]:
    r = req(name)
    path = r["url"].split("//", 1)[1]
    host, _, rest = path.partition("/")
    async with http.request(
        r["method"],
        url_of(gw, "/" + rest),
        headers={**r["headers"], "Host": host, "Accept": "application/json", **headers},
    ) as resp:
        return resp.status, await resp.json(content_type=None)


@pytest.mark.parametrize("name", ["legacy_agent", "dict_agent", "post"])
async def test_cloudflare_signed_requests_are_verified_agents(upstream, gateway_factory, http, name):
    """Requests signed by web-bot-auth (legacy and dictionary Signature-Agent) reach the origin."""
    gw = await at_fixture_time(gateway_factory, upstream, static_config())
    status, info = await send_fixture(http, gw, name)
    assert status == 200, info
    assert info["pop"] == {
        "PoP-Class": "verified-agent",
        "PoP-Subject": "signer.example.test",
        "PoP-Evidence": "webbotauth",
    }


async def test_static_operator_and_nonce_replay(upstream, gateway_factory, http):
    """The configured operator is the subject; the same signed request twice is refused."""
    gw = await at_fixture_time(gateway_factory, upstream, static_config("Example Crawler"))
    status, info = await send_fixture(http, gw, "no_agent")
    assert status == 200 and info["pop"]["PoP-Subject"] == "Example Crawler"
    status, info = await send_fixture(http, gw, "no_agent")
    assert status == 402 and info["reason"] == "replayed"


@pytest.mark.parametrize(
    "headers,reason",
    [
        ({"Signature-Agent": '"https://evil.example.test"'}, "bad_signature"),
        ({"Host": "other.example"}, "bad_signature"),
        ({"Signature": req("no_agent")["headers"]["Signature"]}, "bad_signature"),
    ],
)
async def test_tampered_requests_refused(upstream, gateway_factory, http, headers, reason):
    """A changed agent, authority or signature: 402 problem+json with the reason, never 500."""
    gw = await at_fixture_time(gateway_factory, upstream, static_config())
    status, info = await send_fixture(http, gw, "legacy_agent", **headers)
    assert status == 402 and info["reason"] == reason


async def test_stale_signature_refused(upstream, gateway_factory, http):
    """Outside the signature window the request is unverified."""
    gw = await at_fixture_time(gateway_factory, upstream, static_config())
    gw.gateway.clock = lambda: NOW + 3600
    status, info = await send_fixture(http, gw, "legacy_agent")
    assert status == 402 and info["reason"] == "expired"


def agent_headers(
    gw: Any, origin: str, path: str, nonce: str, key: str = "agent"
) -> tuple[str, dict[str, str]]:
    url = url_of(gw, path)
    hdrs = {"Signature-Agent": f'"{origin}"'}
    view = RequestView.build("GET", url, hdrs)
    sig = sign_items(
        priv(key),
        view,
        [Item("@authority", {}), Item("signature-agent", {})],
        "sig1",
        created=NOW,
        expires=NOW + 60,
        keyid=jwk_thumbprint(PUB[key]),
        alg="ed25519",
        nonce=nonce,
        tag="web-bot-auth",
    )
    return url, {**hdrs, **sig}


async def test_key_directory_fetched_from_local_agent(upstream, gateway_factory, http, dir_server):
    """The agent's signed key directory is fetched over loopback once and cached; unbound keys fail."""
    extra = f'[webbotauth]\nallow_http_directories = true\ndirectories = ["{dir_server.origin}"]\n'
    gw = await at_fixture_time(gateway_factory, upstream, extra)
    for nonce in ("n1", "n2"):
        url, headers = agent_headers(gw, dir_server.origin, "/crawl", nonce)
        async with http.get(url, headers=headers) as r:
            assert r.status == 200, await r.text()
            info = await r.json()
        assert info["pop"]["PoP-Class"] == "verified-agent"
        assert info["pop"]["PoP-Subject"] == dir_server.origin.split("//")[1]
    assert dir_server.hits == 1
    url, headers = agent_headers(gw, dir_server.origin, "/crawl", "n3", key="other")
    async with http.get(url, headers={**headers, "Accept": "application/json"}) as r:
        assert r.status == 402 and (await r.json())["reason"] == "unknown_kid"


async def test_agent_not_in_directories_refused(upstream, gateway_factory, http, dir_server):
    """Only listed agents' directories are fetched (no fetches for arbitrary Signature-Agents)."""
    extra = '[webbotauth]\nallow_http_directories = true\ndirectories = ["http://127.0.0.1:9"]\n'
    gw = await at_fixture_time(gateway_factory, upstream, extra)
    url, headers = agent_headers(gw, dir_server.origin, "/crawl", "n1")
    async with http.get(url, headers={**headers, "Accept": "application/json"}) as r:
        assert r.status == 402 and (await r.json())["reason"] == "bad_agent"
    assert dir_server.hits == 0


def test_config_problems_all_reported(tmp_path: Path) -> None:
    """Every [webbotauth] problem is reported with its key path, at once."""
    with pytest.raises(ConfigError) as exc:
        parse_settings(
            {
                "signature_window": 0,
                "oops": True,
                "directories": ["http://x.example"],
                "keys": [{"jwk": {"kty": "RSA"}}, {"jwks_file": str(tmp_path / "none.json")}, 3],
            }
        )
    text = "\n".join(exc.value.problems)
    for where in (
        "webbotauth.signature_window",
        "webbotauth.oops",
        "webbotauth.directories[0]",
        "webbotauth.keys[0]",
        "webbotauth.keys[1]",
        "webbotauth.keys[2]",
    ):
        assert where in text, where
    with pytest.raises(ConfigError):
        parse_settings({})


COVERAGE = [
    # (covered components, expires - created, outcome at the gateway and in the CLI)
    (("@authority",), 60, "ok"),
    (("@target-uri",), 60, "ok"),
    (("@method", "@path"), 60, "missing_component"),
    (("@authority",), 2 * 3600, "ok"),
    (("@target-uri",), 24 * 3600, "ok"),
    (("@authority",), 24 * 3600 + 1, "malformed"),
]


@pytest.mark.parametrize("components,validity,want", COVERAGE)
async def test_one_rule_for_gateway_and_cli(upstream, gateway_factory, http, components, validity, want):
    """Web Bot Auth: a signature covering ``@authority`` or ``@target-uri`` is
    accepted, ``expires - created`` up to 24 h; the gateway and ``popgate verify
    webbotauth`` give the same answer for the same signed request."""
    import io
    import json

    from popgate.gateway.cli.verify import load_checker, run_cases
    from tests.verifiers.test_webbotauth import AGENT_JWKS

    gw = await at_fixture_time(gateway_factory, upstream, static_config())
    url = url_of(gw, "/crawl")
    nonce = f"n-{'-'.join(components)}-{validity}"
    items = [Item(c, {}) for c in components]
    params = dict(created=NOW, expires=NOW + validity, keyid=jwk_thumbprint(PUB["agent"]), alg="ed25519")
    headers = sign_items(
        priv("agent"),
        RequestView.build("GET", url, {}),
        items,
        "sig1",
        nonce=nonce,
        tag="web-bot-auth",
        **params,
    )
    async with http.get(url, headers={**headers, "Accept": "application/json"}) as r:
        info = await r.json()
        at_gateway = (
            "ok" if r.status == 200 and info["pop"]["PoP-Class"] == "verified-agent" else info["reason"]
        )
    case = {"method": "GET", "url": url, "headers": headers, "jwks": AGENT_JWKS, "now": NOW + 5}
    out = io.StringIO()
    await run_cases(load_checker("webbotauth"), None, io.StringIO(json.dumps(case)), out)
    in_cli = json.loads(out.getvalue())["reason"]
    assert (at_gateway, in_cli) == (want, want)
