"""The dApp verify API's v4 endpoint (Developer Portal ``/api/v4/verify/{rp_id}`` shape): IDKit 4
results as-is, 4.0 proofs verified locally (15-input key + the JSON-RPC chain stand-in), legacy
3.0 items beside them, one use counter per nullifier shared with the v2 endpoint, the fleet's
count exactly once on one Redis."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from popgate.gateway.ops.config import ConfigError, load_config
from popgate.gateway.schemes.worldid_api import ApiError
from popgate.gateway.schemes.worldid_api_v4 import parse_result
from tests.conftest import url_of
from tests.gateway.schemes.test_worldid4_local import CASES as V4
from tests.gateway.schemes.test_worldid4_local import FIX, NOW, chain_state, result, v4_toml
from tests.gateway.schemes.worldid_support import APP_ID, forget_nullifiers, worldid_toml
from tests.gateway.schemes.worldid_support import CASES as V3
from tests.support.idkit4_bridge import rp_context, sdk_result, v4_answer
from tests.support.servers import serve_app, write_config
from tests.support.worldid_chain import make_app

V2_PATH = "/.well-known/popgate/api/v2/verify/"
V4_PATH = "/.well-known/popgate/api/v4/verify/"
RP = FIX["rp_id"]
OTHER_APP = "app_not_migrated_yet"


def api_toml(tmp: Path, port: int | None, max_verifications: int = 1, path: str = V2_PATH) -> str:
    return v4_toml(tmp, port) + (
        f"""
[worldid_api]
path = "{path}"
[[worldid_api.apps]]
app_id = "{APP_ID}"
rp_id = "{RP}"
[[worldid_api.apps.actions]]
action = "verify-human"
max_verifications = {max_verifications}
[[worldid_api.apps.actions]]
action = "documents-only"
verification_levels = ["document"]
[[worldid_api.apps]]
app_id = "{OTHER_APP}"
[[worldid_api.apps.actions]]
action = "verify-human"
"""
    )


def v4_result(i: int) -> dict[str, Any]:
    return result(V4[i]["item"], nonce=V4[i]["nonce"])


def v3_result(i: int, nonce: str = "0x" + "00" * 31 + "01") -> dict[str, Any]:
    return result(V3[i]["idkit4_v3_item"], nonce=nonce, version="3.0")


def v2_body(i: int) -> dict[str, Any]:
    keys = ("proof", "merkle_root", "nullifier_hash", "verification_level")
    return {k: V3[i]["idkit2_result"][k] for k in keys} | {
        "action": V3[i]["action"],
        "signal_hash": V3[i]["signal_hash"],
    }


async def send(http: Any, gw: Any, path: str, payload: Any) -> tuple[int, dict[str, Any]]:
    kw = {"data": payload} if isinstance(payload, bytes) else {"json": payload}
    async with http.post(url_of(gw, path), **kw) as r:
        return r.status, await r.json()


async def start(gateway_factory: Any, upstream: str, tmp: Path, port: int | None, **kw: Any) -> Any:
    extra = api_toml(tmp, port, **{k: v for k, v in kw.items() if k != "store"})
    gw = await gateway_factory(upstream, extra=extra, **({"store": kw["store"]} if "store" in kw else {}))
    gw.gateway.clock = lambda: NOW  # the fixture's 4.0 credentials are checked against their time
    return gw


async def test_v4_result_verified_locally_in_the_portal_shape(upstream, gateway_factory, http, tmp_path):
    """A 4.0 result as IDKit 4 gives it: 200 in the Portal's v4 shape, no cloud; its nonce once;
    the same person with a fresh request: max_verifications_reached; by app_id too."""
    async with serve_app(make_app(chain_state())) as port:
        gw = await start(gateway_factory, upstream, tmp_path, port)
        assert gw.gateway.services.config.features.worldid.cloud_verify_url == ""
        status, data = await send(http, gw, V4_PATH + RP, v4_result(0))
        assert status == 200, data
        nullifier = "0x" + V4[0]["item"]["nullifier"][2:].rjust(64, "0")
        assert data["success"] is True and data["nullifier"] == nullifier and data["action"] == "verify-human"
        assert data["results"] == [
            {"identifier": V4[0]["item"]["identifier"], "success": True, "nullifier": nullifier}
            | {"protocol_version": "4.0"}
        ]
        assert (data["uses"], data["max_uses"], data["environment"]) == (1, 1, "production")
        assert set(data) >= {"created_at", "message"}
        status, data = await send(http, gw, V4_PATH + RP, v4_result(0))
        assert (status, data["code"], data["attribute"]) == (400, "duplicate_nonce", "nonce"), data
        status, data = await send(http, gw, V4_PATH + APP_ID, v4_result(1))  # Portal resolves app ids
        assert (status, data["code"]) == (400, "max_verifications_reached"), data
        assert (await send(http, gw, V4_PATH + APP_ID, v4_result(2)))[0] == 200  # another person


async def test_results_built_by_idkit_core_4_3(upstream, gateway_factory, http, tmp_path):
    """The SDK's own IDKitResult (its WASM core decrypted World App's bridge answer: a 4.0
    item, then a legacy 3.0 one) posted as-is; a signal the proof was not made for is refused."""
    ctx = rp_context(FIX["rp_key"], RP, V4[2]["nonce"], FIX["created_at"], FIX["action"])
    built = await asyncio.to_thread(sdk_result, APP_ID, FIX["action"], ctx, v4_answer(V4[2]["item"]))
    assert built["protocol_version"] == "4.0" and built["nonce"] == V4[2]["nonce"]
    signed = await asyncio.to_thread(
        sdk_result, APP_ID, FIX["action"], ctx, v4_answer(V4[2]["item"]), signal="someone else"
    )
    assert signed["responses"][0]["signal_hash"] != "0x0"
    legacy_answer = {k: V3[0]["idkit2_result"][k] for k in ("proof", "merkle_root", "nullifier_hash")}
    legacy = await asyncio.to_thread(
        sdk_result, APP_ID, FIX["action"], ctx, legacy_answer | {"verification_level": "orb"}, "orbLegacy", ""
    )
    assert legacy["protocol_version"] == "3.0", legacy
    async with serve_app(make_app(chain_state())) as port:
        gw = await start(gateway_factory, upstream, tmp_path, port)
        status, data = await send(http, gw, V4_PATH + RP, signed)
        assert (status, data["code"]) == (400, "invalid_proof"), data
        status, data = await send(http, gw, V4_PATH + RP, built)
        assert status == 200 and data["nullifier"] == V4[2]["item"]["nullifier"], data
        status, data = await send(http, gw, V4_PATH + RP, legacy)
        assert status == 200 and data["results"][0]["protocol_version"] == "3.0", data


async def test_legacy_items_share_the_v2_counter(upstream, gateway_factory, http, tmp_path):
    """A 3.0 result at v4 and the same proof at v2: one counter. A v3+v4 result (one person,
    IDKit 4 with allow_legacy_proofs) uses both nullifiers: neither verifies again alone."""
    async with serve_app(make_app(chain_state())) as port:
        gw = await start(gateway_factory, upstream, tmp_path, port)
        status, data = await send(http, gw, V4_PATH + RP, v3_result(0))
        assert status == 200 and data["results"][0]["protocol_version"] == "3.0", data
        status, data = await send(http, gw, V2_PATH + APP_ID, v2_body(0))
        assert (status, data["code"]) == (400, "max_verifications_reached"), data
        both = result(V3[1]["idkit4_v3_item"], V4[2]["item"], nonce=V4[2]["nonce"])
        status, data = await send(http, gw, V4_PATH + RP, both)
        assert status == 200, data
        assert sorted(r["protocol_version"] for r in data["results"]) == ["3.0", "4.0"]
        status, data = await send(http, gw, V2_PATH + APP_ID, v2_body(1))
        assert (status, data["code"]) == (400, "max_verifications_reached"), data


def change(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(r: dict[str, Any]) -> None:
        target: Any = r
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


NEGATIVES = [
    ("nullifier", change(("responses", 0, "nullifier"), "0x1234"), "invalid_proof", None),
    ("nonce", change(("nonce",), V4[1]["nonce"]), "invalid_proof", None),
    ("signal_hash", change(("responses", 0, "signal_hash"), "0x1"), "invalid_proof", None),
    ("root", change(("responses", 0, "proof", 4), "0x02"), "invalid_merkle_root", None),
    ("issuer", change(("responses", 0, "issuer_schema_id"), 9303), "unknown_issuer", None),
    ("action", change(("action",), "vote"), "invalid_action", "action"),
    ("level", change(("action",), "documents-only"), "verification_level_not_allowed", None),
    ("version", change(("protocol_version",), "5.0"), "invalid_format", "protocol_version"),
    ("unknown field", change(("extra",), 1), "invalid_request", "extra"),
    ("session proof", change(("session_id",), "session_00"), "invalid_request", "session_id"),
    ("no items", change(("responses",), []), "invalid_format", "responses"),
    ("item shape", change(("responses", 0, "proof"), ["0x1"]), "invalid_format", None),
]  # fmt: skip


async def test_single_field_negatives_spend_nothing(upstream, gateway_factory, http, tmp_path):
    async with serve_app(make_app(chain_state())) as port:
        gw = await start(gateway_factory, upstream, tmp_path, port)
        for name, mutate, code, attribute in NEGATIVES:
            bad = copy.deepcopy(v4_result(0))
            mutate(bad)
            status, data = await send(http, gw, V4_PATH + RP, bad)
            assert (status, data["code"], data["attribute"]) == (400, code, attribute), (name, data)
        for raw in (b"not json", b"[]", b"{" + b" " * 40000 + b"}"):
            status, data = await send(http, gw, V4_PATH + RP, raw)
            assert status in (400, 413) and set(data) == {"code", "detail", "attribute"}, data
        status, data = await send(http, gw, V4_PATH + OTHER_APP, v4_result(0))
        assert (status, data["code"]) == (400, "app_not_migrated"), data
        async with http.get(url_of(gw, V4_PATH + RP)) as r:
            assert r.status == 405
        gw.gateway.clock = lambda: V4[0]["item"]["expires_at_min"] + 10**6
        assert (await send(http, gw, V4_PATH + RP, v4_result(0)))[1]["code"] == "credential_expired"
        gw.gateway.clock = lambda: NOW
        assert (await send(http, gw, V4_PATH + RP, v4_result(0)))[0] == 200, "a refusal spent nothing"


async def test_without_chain_4_0_is_unsupported_and_3_0_still_works(
    upstream, gateway_factory, http, tmp_path
):
    gw = await start(gateway_factory, upstream, tmp_path, None)
    status, data = await send(http, gw, V4_PATH + RP, v4_result(0))
    assert (status, data["code"]) == (400, "unsupported_protocol"), data
    assert (await send(http, gw, V4_PATH + RP, v3_result(0)))[0] == 200


async def test_chain_down_is_a_503_with_retry_after(upstream, gateway_factory, http, tmp_path):
    state = chain_state()
    state.down = True
    async with serve_app(make_app(state)) as port:
        gw = await start(gateway_factory, upstream, tmp_path, port)
        async with http.post(url_of(gw, V4_PATH + RP), json=v4_result(0)) as r:
            data = await r.json()
            assert (r.status, data["code"]) == (503, "chain_unavailable") and "Retry-After" in r.headers


async def test_exactly_max_verifications_across_two_gateways(
    upstream, gateway_factory, http, tmp_path, redis_url
):
    """One person's two 4.0 requests, each sent four times, at two gateways on one Redis at
    once, max_verifications = 1: one use succeeds; each nonce is taken once fleet-wide."""
    await forget_nullifiers(redis_url)
    async with serve_app(make_app(chain_state())) as port:
        gws = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            gws.append(
                await start(
                    gateway_factory, upstream, tmp_path / name, port, max_verifications=1, store=redis_url
                )
            )
        calls = [(gws[i % 2], v4_result(i % 2 if i < 4 else 1 - i % 2)) for i in range(8)]
        got = await asyncio.gather(*(send(http, gw, V4_PATH + RP, body) for gw, body in calls))
    codes = sorted(d.get("code", "ok") for _, d in got)
    assert codes == ["duplicate_nonce"] * 6 + ["max_verifications_reached", "ok"], codes


def test_config_problems_name_their_keys(tmp_path):
    bad = worldid_toml() + (
        f'[worldid_api]\nv4_path = "nope"\n[[worldid_api.apps]]\napp_id = "{APP_ID}"\nrp_id = "rp_12"\n'
        '[[worldid_api.apps.actions]]\naction = "a"\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=bad))
    assert "worldid_api.v4_path" in str(err.value) and "worldid_api.apps[0].rp_id" in str(err.value)
    same = bad.replace('v4_path = "nope"', f'v4_path = "{V2_PATH}"').replace('"rp_12"', f'"{RP}"')
    with pytest.raises(ConfigError, match=r"worldid_api.v4_path: must differ"):
        load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=same))
    twice = api_toml(tmp_path, None).replace(
        f'app_id = "{OTHER_APP}"', f'app_id = "{OTHER_APP}"\nrp_id = "{RP}"'
    )
    with pytest.raises(ConfigError, match=r"worldid_api.apps\[1\].rp_id: another app"):
        load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=twice))
    ok = load_config(
        write_config(tmp_path, "http://127.0.0.1:1", extra=api_toml(tmp_path, None, path="/api/v2/verify/"))
    )
    assert ok.features.worldid_api is not None and ok.features.worldid_api.v4_path == "/api/v4/verify/"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=5),
    max_leaves=16,
)
tops = st.fixed_dictionaries(
    {}, optional={k: json_values for k in ("protocol_version", "nonce", "action", "environment", "responses")}
)


@given(st.one_of(json_values, tops, st.binary(max_size=48)))
def test_parse_result_takes_the_shape_or_names_the_field(value: Any) -> None:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    try:
        body = parse_result(raw)
    except ApiError as exc:
        assert exc.status == 400 and exc.code in ("invalid_request", "invalid_format")
        return
    assert body["protocol_version"] in ("3.0", "4.0") and isinstance(body["action"], str)
    assert isinstance(body["responses"], list) and 1 <= len(body["responses"]) <= 2
