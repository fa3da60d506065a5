"""World ID 4.0 results through a cloud-verify endpoint (a local stub that really
verifies the proof); popgate still spends the nullifier once."""

from __future__ import annotations

import copy

from tests.conftest import admin_url, url_of
from tests.gateway.schemes.test_worldid import post
from tests.gateway.schemes.worldid_support import worldid_toml
from tests.support import cloudverify
from tests.support.servers import free_port, serve_app


async def test_v4_result_via_cloud_verify(upstream, gateway_factory, http):
    seen: list[dict] = []
    async with serve_app(cloudverify.make_app(seen)) as port:
        url = f"http://127.0.0.1:{port}/api/v4/verify/app_test"
        gw = await gateway_factory(
            upstream, extra=worldid_toml(action=cloudverify.ACTION, cloud_verify_url=url)
        )
        result = cloudverify.fixture_result()
        status, data, headers = await post(http, gw, {"result": result})
        assert status == 200, data
        assert data["class"] == "human" and "HttpOnly" in headers["Set-Cookie"]
        assert seen[-1] == result, "the IDKit result is posted as-is"
        async with http.get(url_of(gw, "/x"), headers={"Authorization": f"PoP {data['token']}"}) as r:
            assert (await r.json())["pop"]["PoP-Class"] == "human"
        # The cloud accepts a reused nullifier (as the real API does); popgate does not.
        status, again, _ = await post(http, gw, {"result": result})
        assert (status, again["reason"]) == (409, "nullifier_reused")
        assert len(seen) == 2
        # A tampered proof input is caught by the stub's real verification.
        bad = copy.deepcopy(result)
        bad["responses"][0]["signal_hash"] = "0x1234"
        status, data, _ = await post(http, gw, {"result": bad})
        assert (status, data["reason"]) == (401, "invalid_proof")
        bad = copy.deepcopy(result)
        bad["action"] = "another"
        status, data, _ = await post(http, gw, {"result": bad})
        assert (status, data["reason"]) == (400, "wrong_action")
    # The endpoint is gone: 503 with Retry-After, not a hang and not an acceptance.
    status, data, headers = await post(http, gw, {"result": cloudverify.fixture_result()})
    assert (status, data["reason"]) == (503, "verifier_unavailable") and "Retry-After" in headers
    async with http.get(admin_url(gw, "/metrics")) as r:
        text = await r.text()
    assert 'popgate_evidence_total{result="nullifier_reused",scheme="worldid"}' in text


async def test_v4_without_cloud_is_refused(upstream, gateway_factory, http):
    gw = await gateway_factory(upstream, extra=worldid_toml(action=cloudverify.ACTION))
    status, data, _ = await post(http, gw, {"result": cloudverify.fixture_result()})
    assert (status, data["reason"]) == (400, "unsupported_protocol")


async def test_pool_metrics_exported(upstream, gateway_factory, http):
    gw = await gateway_factory(upstream, extra=worldid_toml())
    from tests.gateway.schemes.worldid_support import body

    assert (await post(http, gw, body(0)))[0] == 200
    async with http.get(admin_url(gw, "/metrics")) as r:
        text = await r.text()
    assert 'popgate_verification_seconds_count{scheme="worldid"} 1.0' in text
    assert "popgate_verify_queue_depth 0.0" in text
    assert 'popgate_sessions_issued_total{evidence="worldid",klass="human"} 1.0' in text


_ = free_port
