"""Two RFC 9421 signatures on one request, a Web Bot Auth one and an account
session's: the session binding checks the signature whose keyid names the
session, whatever the order, so the class does not depend on it."""

from __future__ import annotations

import time

import pytest

from popgate.verifiers.httpsig import RequestView, jwk_thumbprint
from popgate.verifiers.structured_fields import Item
from tests.conftest import url_of
from tests.gateway.schemes.test_webbotauth import static_config
from tests.gateway.schemes.test_zklogin import Client, login, zk_config
from tests.verifiers.test_webbotauth import PUB, priv, sign_items


def wba_signature(url: str, nonce: str) -> dict[str, str]:
    now = int(time.time())
    return sign_items(
        priv("agent"),
        RequestView.build("GET", url, {}),
        [Item("@authority", {})],
        "wba",
        created=now,
        expires=now + 60,
        keyid=jwk_thumbprint(PUB["agent"]),
        alg="ed25519",
        nonce=nonce,
        tag="web-bot-auth",
    )


@pytest.mark.parametrize("wba_first", [True, False])
async def test_session_signature_found_in_either_order(
    upstream, gateway_factory, http, jwks_server, wba_first
):
    gw = await gateway_factory(upstream, extra=zk_config(jwks_server.url) + static_config("Crawler Inc"))
    c = Client()
    data = await login(http, gw, c)
    url = url_of(gw, "/api/items")
    session, wba = c.sign("GET", url), wba_signature(url, f"n-{wba_first}")
    first, second = (wba, session) if wba_first else (session, wba)
    headers = {
        **session,
        "Signature-Input": f"{first['Signature-Input']}, {second['Signature-Input']}",
        "Signature": f"{first['Signature']}, {second['Signature']}",
    }
    async with http.get(url, headers=headers) as r:
        assert r.status == 200, await r.text()
        pop = (await r.json())["pop"]
    assert pop["PoP-Class"] == "account" and pop["PoP-Subject"] == data["subject"]
