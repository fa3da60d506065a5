"""Full zkLogin proofs through the real gateway: a real Google proof (fastcrypto's
test vector, production key) buys an ``account`` session bound to its ephemeral
key; tampered proofs, unknown issuers, passed epochs and gateways without
``proofs = true`` are refused with their reasons, never a 500."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.conftest import url_of

FIX = json.loads(
    (Path(__file__).resolve().parents[2] / "fixtures" / "zklogin" / "proof_vectors.json").read_text()
)
CASE = FIX["proofs"][0]
ENDPOINT = "/.well-known/popgate/zklogin"


def config(
    tmp: Path, *, proofs: bool = True, current_epoch: int = 5, issuer: str = "https://accounts.google.com"
) -> str:
    jwks = tmp / "google-jwks.json"
    jwks.write_text(json.dumps({"keys": [CASE["jwk"]]}))
    return f"""
[zklogin]
epoch_mode = "sui"
current_epoch = {current_epoch}
proofs = {str(proofs).lower()}
padded_address = false
[[zklogin.providers]]
issuer = "{issuer}"
audience = "any-client-id"
jwks_file = "{jwks}"
"""


async def post(http, gw, body: Any) -> tuple[int, dict[str, Any]]:
    async with http.post(url_of(gw, ENDPOINT), json=body) as r:
        return r.status, await r.json(content_type=None)


async def test_real_proof_buys_a_bound_account_session(upstream, gateway_factory, http, tmp_path):
    gw = await gateway_factory(upstream, extra=config(tmp_path))
    status, data = await post(http, gw, {"zklogin_signature": CASE["zklogin_signature"]})
    assert status == 200, data
    assert data["class"] == "account"
    assert data["address"] == CASE["address_unpadded"]
    assert data["subject"] == "zklogin:" + CASE["address_unpadded"]
    # the prover's JSON form gives the same account
    raw = {"inputs": CASE["inputs"], "ext_eph_pk": CASE["ext_eph_pk"], "max_epoch": "10"}
    status, again = await post(http, gw, raw)
    assert status == 200, again
    assert again["subject"] == data["subject"]
    # bound to the ephemeral key: the token alone opens nothing
    async with http.get(url_of(gw, "/x"), headers={"Authorization": f"PoP {data['token']}"}) as r:
        body = await r.json(content_type=None)
        assert r.status == 402 and body["reason"] == "signature_required", body
    pool = gw.gateway.endpoints[ENDPOINT].proofs.pool
    assert pool.stats["pooled"] == 1 and pool.stats["cached"] == 1, "one pairing, then the cache"
    reg = gw.gateway.metrics.registry
    assert reg.get_sample_value("popgate_evidence_total", {"scheme": "zklogin", "result": "ok"}) == 2


async def test_refusals_have_reasons(upstream, gateway_factory, http, tmp_path):
    gw = await gateway_factory(upstream, extra=config(tmp_path))
    raw = {"inputs": CASE["inputs"], "ext_eph_pk": CASE["ext_eph_pk"], "max_epoch": "11"}
    assert (await post(http, gw, raw))[1]["reason"] == "invalid_proof"
    other_kid = json.loads(json.dumps(CASE["inputs"]))
    other_kid["headerBase64"] = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9"  # {"alg":"RS256","kid":"123"}
    status, data = await post(http, gw, {**raw, "inputs": other_kid, "max_epoch": "10"})
    assert (status, data["reason"]) == (401, "unknown_kid")
    status, data = await post(http, gw, {"zklogin_signature": "BQAA"})
    assert (status, data["reason"]) == (401, "malformed")
    status, data = await post(http, gw, {"inputs": "x"})
    assert status in (400, 401) and data["reason"] == "malformed"

    passed = await gateway_factory(upstream, extra=config(tmp_path, current_epoch=11))
    status, data = await post(http, passed, {"zklogin_signature": CASE["zklogin_signature"]})
    assert (status, data["reason"]) == (401, "expired")
    twitch = await gateway_factory(upstream, extra=config(tmp_path, issuer="https://id.twitch.tv/oauth2"))
    status, data = await post(http, twitch, {"zklogin_signature": CASE["zklogin_signature"]})
    assert (status, data["reason"]) == (401, "wrong_issuer")
    off = await gateway_factory(upstream, extra=config(tmp_path, proofs=False))
    status, data = await post(http, off, {"zklogin_signature": CASE["zklogin_signature"]})
    assert (status, data["reason"]) == (400, "proofs_disabled")


async def test_way_out_offers_proofs(upstream, gateway_factory, http, tmp_path):
    gw = await gateway_factory(upstream, extra=config(tmp_path))
    async with http.get(url_of(gw, "/x"), headers={"Accept": "application/json"}) as r:
        ways = {w["kind"]: w for w in (await r.json(content_type=None))["ways_out"]}
    assert ways["zklogin"]["proof"]["circuit"] == "Sui zkLogin V1"
