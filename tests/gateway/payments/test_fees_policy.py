"""Fees through the real policy engine: a `challenge` that accepts `pay` lets a
paying client through at the route's price, exactly like a `charge`."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from x402.http.clients import x402HttpxClient

from tests.conftest import url_of
from tests.gateway.payments.test_fees_x402 import sdk, x402_toml
from tests.support.facilitator import running

POLICY = """
version = 1
[default]
human = "allow"
account = "allow"
verified-agent = { kind = "charge", price = "0.01" }
agent = { kind = "challenge", ways = ["pay", "puzzle"], price = "0.002", min_bits = 12 }
unknown = { kind = "challenge", ways = ["prove", "puzzle", "pay"], price = "0.002", min_bits = 12 }
"""


async def policy_gateway(factory, upstream: str, fac: str, tmp: Path):
    (tmp / "policy.toml").write_text(POLICY)
    (tmp / "pz").write_bytes(b"p" * 40)
    extra = (
        f'[policy]\nfile = "{tmp / "policy.toml"}"\n'
        f'[puzzle]\nkeys = [{{kid = "p1", secret_file = "{tmp / "pz"}"}}]\n' + x402_toml(fac)
    )
    return await factory(upstream, extra=extra)


async def test_sdk_pays_through_a_challenge(gateway_factory, upstream, tmp_path, http):
    """Unknown client on a challenged route: the 402 offers puzzle and x402; the
    official SDK pays and reaches the origin, charged the route's price once."""
    async with running() as (fac, st):
        gw = await policy_gateway(gateway_factory, upstream, fac, tmp_path)
        async with http.get(url_of(gw, "/v1/items")) as r:
            assert r.status == 402
            kinds = [w["kind"] for w in (await r.json())["ways_out"]]
            assert "puzzle" in kinds and "pay" in kinds
            required = json.loads(base64.b64decode(r.headers["PAYMENT-REQUIRED"]))
            assert required["accepts"][0]["amount"] == "2000", "the rule's price, not [x402]'s default"
        async with x402HttpxClient(sdk()) as client:
            resp = await client.get(url_of(gw, "/v1/items"))
        assert resp.status_code == 200, resp.text
        assert resp.json()["pop"]["PoP-Charged"] == "2000"
        assert len(st.settled) == 1 and st.settled[0]["value"] == "2000"


async def test_bad_payment_on_a_challenge_is_not_let_through(gateway_factory, upstream, tmp_path, http):
    """A malformed payment on a challenged route: 400, never the origin."""
    async with running() as (fac, _):
        gw = await policy_gateway(gateway_factory, upstream, fac, tmp_path)
        async with http.get(url_of(gw, "/v1/items"), headers={"PAYMENT-SIGNATURE": "e30="}) as r:
            assert r.status == 400
            assert "pop" not in json.loads(await r.text())
