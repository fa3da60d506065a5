"""Fees through the real policy engine: a `challenge` that accepts `pay` lets a
paying client through at the route's price, exactly like a `charge`."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from x402.http.clients import x402HttpxClient

from tests.conftest import url_of
from tests.gateway.payments.test_fees_x402 import sdk, x402_toml
from tests.support.facilitator import FacilitatorState, running

POLICY = """
version = 1
[default]
human = "allow"
account = "allow"
verified-agent = { kind = "charge", price = "0.01" }
agent = { kind = "challenge", ways = ["pay", "puzzle"], price = "0.002", min_bits = 12 }
unknown = { kind = "challenge", ways = ["prove", "puzzle", "pay"], price = "0.002", min_bits = 12 }
"""


async def policy_gateway(factory, upstream: str, fac: str, tmp: Path, **x402: str):
    (tmp / "policy.toml").write_text(POLICY)
    (tmp / "pz").write_bytes(b"p" * 40)
    extra = (
        f'[policy]\nfile = "{tmp / "policy.toml"}"\n'
        f'[puzzle]\nkeys = [{{kid = "p1", secret_file = "{tmp / "pz"}"}}]\n' + x402_toml(fac, **x402)
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


async def _refusal(http, url: str, header: str) -> tuple[dict, dict]:
    async with http.get(url, headers={"PAYMENT-SIGNATURE": header}) as r:
        assert r.status == 402
        required = json.loads(base64.b64decode(r.headers["PAYMENT-REQUIRED"]))
        pay = [w for w in (await r.json())["ways_out"] if w["kind"] == "pay"]
        assert len(pay) == 1, "one pay way out"
        return required, pay[0]


async def test_refused_payment_under_a_policy_names_the_reason(gateway_factory, upstream, tmp_path, http):
    """Under a policy file (whose Charge already lists a plain ``pay`` way), a
    refused payment's reason reaches the client in PAYMENT-REQUIRED and in the
    ``pay`` way out: tampered amount, replay, failed settlement."""
    from x402.http.utils import decode_payment_required_header, encode_payment_signature_header

    state = FacilitatorState()
    async with running(state) as (fac, _):
        gw = await policy_gateway(gateway_factory, upstream, fac, tmp_path)
        url = url_of(gw, "/v1/items")
        async with http.get(url) as r:
            required = decode_payment_required_header(r.headers["PAYMENT-REQUIRED"])
        header = encode_payment_signature_header(await sdk().create_payment_payload(required))
        obj = json.loads(base64.b64decode(header))
        obj["payload"]["authorization"]["value"] = "2001"
        obj["accepted"]["amount"] = "2001"
        tampered = base64.b64encode(json.dumps(obj).encode()).decode()
        pr, way = await _refusal(http, url, tampered)
        assert pr["error"] == way["error"] == "requirements_mismatch"
        async with http.get(url, headers={"PAYMENT-SIGNATURE": header}) as r:
            assert r.status == 200
        pr, way = await _refusal(http, url, header)
        assert pr["error"] == way["error"] == "nonce_reused"
        state.settle_mode = "fail"
        fresh = encode_payment_signature_header(await sdk().create_payment_payload(required))
        pr, way = await _refusal(http, url, fresh)
        assert pr["error"] == way["error"] == "settlement_failed"


async def test_debt_limit_under_a_policy_names_the_reason(gateway_factory, upstream, tmp_path, http):
    """settle = after under a policy file: over the debt limit, the 402 says ``debt_limit``."""
    from x402.http.utils import decode_payment_required_header, encode_payment_signature_header

    async with running(FacilitatorState(settle_mode="http500")) as (fac, _):
        gw = await policy_gateway(
            gateway_factory, upstream, fac, tmp_path, settle='"after"', debt_limit='"0.002"'
        )
        url = url_of(gw, "/v1/items")
        async with http.get(url) as r:
            required = decode_payment_required_header(r.headers["PAYMENT-REQUIRED"])
        first, second = [
            encode_payment_signature_header(await sdk().create_payment_payload(required)) for _ in range(2)
        ]
        async with http.get(url, headers={"PAYMENT-SIGNATURE": first}) as r:
            assert r.status == 200
        pr, way = await _refusal(http, url, second)
        assert pr["error"] == way["error"] == "debt_limit"
