"""The dApp verify API (Developer Portal v2 shape) against the real `verifyCloudProof` of
@worldcoin/idkit-core 2.1.0, run by node: real fixture proofs, local Groth16, the Portal's codes."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.ops.config import ConfigError, load_config
from popgate.gateway.schemes.worldid_api import ApiError, parse_body
from tests.conftest import admin_url, url_of
from tests.gateway.schemes.worldid_support import APP_ID, CASES, ROOT, worldid_toml
from tests.support import jsonrpc
from tests.support.node import NODE_DIR, run_node
from tests.support.servers import (
    free_port,
    gateway_process,
    redis_server,
    serve_app,
    wait_port_async,
    write_config,
)

SCRIPT = NODE_DIR / "scripts" / "verify_cloud_proof.mjs"
PREFIX = "/.well-known/popgate/api/v2/verify/"
README = Path(__file__).resolve().parents[3] / "README.md"


def api_toml(tmp: Path, max_verifications: int = 1, path: str = PREFIX) -> str:
    (tmp / "admin").write_text("a" * 40)
    return (
        worldid_toml()
        + f"""
[worldid_api]
path = "{path}"
admin_token = {{ secret_file = "{tmp / "admin"}" }}
[[worldid_api.apps]]
app_id = "{APP_ID}"
[[worldid_api.apps.actions]]
action = "verify-human"
max_verifications = {max_verifications}
[[worldid_api.apps.actions]]
action = ""
max_verifications = 0
"""
    )


def call(case: int, endpoint: str, **over: Any) -> dict[str, Any]:
    c = CASES[case]
    proof = {
        k: c["idkit2_result"][k] for k in ("proof", "merkle_root", "nullifier_hash", "verification_level")
    }
    proof.update(over.pop("proof_over", {}))
    return {
        "proof": proof,
        "app_id": APP_ID,
        "action": c["action"],
        "signal": c["signal"],
        "endpoint": endpoint,
    } | over


def verify(calls: list[dict[str, Any]], parallel: bool = False) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = run_node(SCRIPT, stdin={"calls": calls, "parallel": parallel}, timeout=120)
    return out


async def test_verify_cloud_proof_accepts_and_refuses_with_portal_codes(
    upstream, gateway_factory, tmp_path, http
):
    """Accepted, reused, wrong signal, bad root, unknown action: what verifyCloudProof returns."""
    gw = await gateway_factory(upstream, extra=api_toml(tmp_path))
    ep = url_of(gw, PREFIX + APP_ID)
    results = await asyncio.to_thread(
        verify,
        [
            call(0, ep),  # accepted
            call(0, ep),  # the same person again: max_verifications = 1
            call(1, ep, signal="not what was proved"),
            call(1, ep, proof_over={"merkle_root": "0x" + "1" * 64}),
            call(2, ep),  # action "vote" is not configured
            call(3, ep),  # sign-in action "", unlimited
            call(3, ep),
        ],
    )
    assert results[0] == {"success": True}, results[0]
    assert results[1]["success"] is False and results[1]["code"] == "max_verifications_reached", results[1]
    assert (results[2]["code"], results[2]["attribute"]) == ("invalid_proof", "proof"), results[2]
    assert results[3]["code"] == "invalid_merkle_root", results[3]
    assert (results[4]["code"], results[4]["attribute"]) == ("invalid_action", "action"), results[4]
    assert results[5] == results[6] == {"success": True}
    assert all(set(r) == {"success", "code", "detail", "attribute"} for r in results[1:5]), results
    # The 200 body itself, as the Portal shapes it.
    body = {**call(3, ep)["proof"], "action": "", "signal_hash": CASES[3]["signal_hash"]}
    async with http.post(ep, json=body) as r:
        data = await r.json()
    assert r.status == 200 and data["success"] is True and data["uses"] == 3 and data["max_uses"] == 0
    assert data["nullifier_hash"] == "0x" + CASES[3]["idkit2_result"]["nullifier_hash"][2:].rjust(64, "0")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", data["created_at"])
    pool = gw.gateway.endpoints["/.well-known/popgate/worldid"].pool
    assert pool.stats["pooled"] == 3, pool.stats  # cached verdicts are not paired twice; bad root never


async def test_bad_input_is_a_portal_error_never_a_500(upstream, gateway_factory, tmp_path, http):
    gw = await gateway_factory(upstream, extra=api_toml(tmp_path))
    ep = url_of(gw, PREFIX + APP_ID)
    good = {**call(0, ep)["proof"], "action": "verify-human"}
    cases = [
        (b"not json", 400, "invalid_request", None),
        (b"[1]", 400, "invalid_request", None),
        ({**good, "extra": 1}, 400, "invalid_request", "extra"),
        ({**good, "proof": 5}, 400, "invalid_format", "proof"),
        ({**good, "proof": "0x1234"}, 400, "invalid_format", "proof"),
        ({**good, "merkle_root": "zz"}, 400, "invalid_format", "merkle_root"),
        ({**good, "nullifier_hash": "0x" + "f" * 64}, 400, "invalid_format", "nullifier_hash"),
        ({**good, "signal_hash": "-1"}, 400, "invalid_format", "signal_hash"),
        ({**good, "max_age": 10}, 400, "invalid_format", "max_age"),
        ({**good, "verification_level": "gold"}, 400, "invalid_format", "verification_level"),
        ({k: v for k, v in good.items() if k != "action"}, 400, "invalid_format", "action"),
    ]
    for payload, status, code, attribute in cases:
        kw = {"data": payload} if isinstance(payload, bytes) else {"json": payload}
        async with http.post(ep, **kw) as r:
            data = await r.json()
        assert (r.status, data["code"], data["attribute"]) == (status, code, attribute), (payload, data)
    async with http.get(ep) as r:
        assert r.status == 405 and (await r.json())["code"] == "method_not_allowed"
    async with http.post(ep, data=b"{" + b" " * 20000 + b"}") as r:
        assert r.status == 413
    async with http.post(url_of(gw, PREFIX + "app_unknown"), json=good) as r:
        assert r.status == 404
    async with http.post(ep, json=good) as r:  # still fine afterwards
        assert r.status == 200


async def test_admin_lists_verifications(upstream, gateway_factory, tmp_path, http):
    gw = await gateway_factory(upstream, extra=api_toml(tmp_path, max_verifications=2))
    ep = url_of(gw, PREFIX + APP_ID)
    await asyncio.to_thread(verify, [call(0, ep), call(0, ep), call(0, ep), call(1, ep)])
    listing = admin_url(gw, f"/admin/worldid/verifications?app_id={APP_ID}&action=verify-human")
    async with http.get(listing) as r:
        assert r.status == 401
    async with http.get(listing, headers={"Authorization": "Bearer " + "b" * 40}) as r:
        assert r.status == 401
    async with http.get(listing, headers={"Authorization": "Bearer " + "a" * 40}) as r:
        data = await r.json()
    assert r.status == 200, data
    rows = data["verifications"]
    assert [(row["seq"], row["uses"]) for row in rows] == [(1, 1), (2, 2), (3, 1)], rows
    assert rows[0]["nullifier_hash"] == rows[1]["nullifier_hash"] != rows[2]["nullifier_hash"]
    async with http.get(
        listing.replace("verify-human", "nope"), headers={"Authorization": "Bearer " + "a" * 40}
    ) as r:
        assert r.status == 404


async def test_twenty_concurrent_verifications_across_two_gateways(tmp_path, upstream, redis_url):
    """One nullifier, 20 verifyCloudProof calls at once split over two gateway processes on one
    Redis: exactly max_verifications (3) succeed, the rest get max_verifications_reached."""
    procs, eps = [], []
    try:
        for name in ("a", "b"):
            d = tmp_path / name
            d.mkdir()
            port = free_port()
            cfg = write_config(d, upstream, store=redis_url, listen=port, extra=api_toml(d, 3))
            procs.append(gateway_process(cfg))
            eps.append(f"http://127.0.0.1:{port}{PREFIX}{APP_ID}")
        for ep in eps:
            await wait_port_async(int(ep.split(":")[2].split("/")[0]), timeout=30)
        # both alive: a port another process took between free_port() and bind would answer too
        assert all(p.poll() is None for p in procs), "a gateway exited at start-up"
        # warm both (key prepared in the pool) with a refused proof
        warm = await asyncio.to_thread(verify, [call(1, ep, signal="x") for ep in eps])
        assert all(w["code"] == "invalid_proof" for w in warm), warm
        results = await asyncio.to_thread(verify, [call(0, eps[i % 2]) for i in range(20)], True)
    finally:
        for p in procs:
            p.terminate()
        logs = [p.communicate(timeout=20)[0].decode(errors="replace")[-1500:] for p in procs]
    codes = [r.get("code", "ok") for r in results]
    assert codes.count("ok") == 3 and codes.count("max_verifications_reached") == 17, (codes, logs)


async def test_portal_paths_exactly(upstream, gateway_factory, tmp_path, http):
    """With path = "/api/v2/verify/" popgate answers the Portal's own path (not the origin);
    other paths still go through the pipeline to the origin."""
    gw = await gateway_factory(upstream, extra=api_toml(tmp_path, path="/api/v2/verify/"))
    ep = url_of(gw, "/api/v2/verify/" + APP_ID)
    results = await asyncio.to_thread(verify, [call(0, ep), call(0, ep)])
    assert results[0] == {"success": True} and results[1]["code"] == "max_verifications_reached", results
    async with http.get(url_of(gw, "/api/v2/verify/other")) as r:
        assert r.status == 402  # not an endpoint: the pipeline's challenge


def test_config_is_validated_with_key_paths(tmp_path):
    bad = (
        worldid_toml()
        + """
[worldid_api]
path = "api/v2"
gate_rate = 0
[[worldid_api.apps]]
app_id = "nope"
[[worldid_api.apps.actions]]
action = "a"
max_verifications = -1
verification_levels = ["gold"]
[[worldid_api.apps.actions]]
action = "a"
"""
    )
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=bad))
    text = str(err.value)
    for path in (
        "worldid_api.path",
        "worldid_api.gate_rate",
        "worldid_api.apps[0].app_id",
        "worldid_api.apps[0].actions[0].max_verifications",
        "worldid_api.apps[0].actions[0].verification_levels",
        "worldid_api.apps[0].actions[1].action",
    ):
        assert path in text, (path, text)
    alone = f'\n[worldid_api]\n[[worldid_api.apps]]\napp_id = "{APP_ID}"\n'
    alone += '[[worldid_api.apps.actions]]\naction = "x"\n'
    with pytest.raises(ConfigError, match=r"worldid_api: needs \[worldid\]"):
        load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=alone))


async def test_readme_python_example(upstream, gateway_factory, tmp_path):
    """The README's copy-paste Python equivalent of verifyCloudProof, run as written."""
    gw = await gateway_factory(upstream, extra=api_toml(tmp_path))
    text = README.read_text()
    marker = "<!-- tested: tests/gateway/schemes/test_worldid_api.py::test_readme_python_example -->"
    block = text.split(marker, 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    c = CASES[1]
    ns: dict[str, Any] = {}
    await asyncio.to_thread(exec, block, ns)
    proof = {
        k: c["idkit2_result"][k] for k in ("proof", "merkle_root", "nullifier_hash", "verification_level")
    }
    ep = url_of(gw, PREFIX + APP_ID)
    ok = await asyncio.to_thread(ns["verify_cloud_proof"], proof, APP_ID, "verify-human", c["signal"], ep)
    again = await asyncio.to_thread(ns["verify_cloud_proof"], proof, APP_ID, "verify-human", c["signal"], ep)
    assert ok["success"] is True and ok["action"] == "verify-human", ok
    assert again == {"success": False, **again} and again["code"] == "max_verifications_reached", again


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6),
    max_leaves=20,
)
fields = st.fixed_dictionaries(
    {},
    optional={
        k: json_values
        for k in (
            "proof",
            "merkle_root",
            "nullifier_hash",
            "verification_level",
            "action",
            "signal_hash",
            "max_age",
        )
    },
)


@given(st.one_of(json_values, fields, st.binary(max_size=64)))
def test_parse_body_accepts_the_schema_or_says_which_field(value: Any) -> None:
    """Any bytes or JSON: a Portal-shaped body, or a 400 ApiError naming the problem, never another error."""
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    try:
        body = parse_body(raw)
    except ApiError as exc:
        assert exc.status == 400 and exc.code in ("invalid_request", "invalid_format")
        assert exc.attribute is None or isinstance(exc.attribute, str)
        return
    assert all(isinstance(body[k], str) for k in ("proof", "merkle_root", "nullifier_hash", "action"))


async def test_store_down_fails_closed_with_a_portal_503(upstream, gateway_factory, tmp_path, http):
    """Redis stops after start-up: the API answers 503 store_unavailable with Retry-After,
    never a success it could not count."""
    with redis_server() as (url, proc):
        gw = await gateway_factory(upstream, extra=api_toml(tmp_path), store=url)
        ep = url_of(gw, PREFIX + APP_ID)
        body = {**call(0, ep)["proof"], "action": "verify-human", "signal_hash": CASES[0]["signal_hash"]}
        proc.terminate()
        proc.wait(10)
        async with http.post(ep, json=body) as r:
            data = await r.json()
        assert (r.status, data["code"]) == (503, "store_unavailable"), data
        assert int(r.headers["Retry-After"]) >= 1


async def test_max_age_refuses_a_root_replaced_longer_ago(upstream, gateway_factory, tmp_path, http):
    """With chain roots, a root superseded 2 h ago is valid (1-week window) but older than max_age 1 h:
    the Portal's root_too_old; a max_age of 3 h or none accepts it."""
    contract = "0x" + "ab" * 20
    state = jsonrpc.ChainState(
        contract, latest=7, history={int(ROOT, 16): int(time.time()) - 7200}, expiry=604800
    )
    async with serve_app(jsonrpc.make_app(state)) as port:
        roots = f'source = "rpc"\nrpc_url = "http://127.0.0.1:{port}/"\ncontract = "{contract}"\n'
        extra = api_toml(tmp_path, max_verifications=0).replace(worldid_toml(), worldid_toml(roots=roots))
        gw = await gateway_factory(upstream, extra=extra)
        ep = url_of(gw, PREFIX + APP_ID)
        good = {**call(3, ep)["proof"], "action": "", "signal_hash": CASES[3]["signal_hash"]}
        for max_age, status, code in ((3600, 400, "root_too_old"), (10800, 200, None), (None, 200, None)):
            payload = good if max_age is None else {**good, "max_age": max_age}
            async with http.post(ep, json=payload) as r:
                data = await r.json()
            assert (r.status, data.get("code")) == (status, code), (max_age, data)
