"""World ID 4.0 verified by popgate itself (no cloud_verify_url): IDKit 4 results with
popgate-signed nonces, chain facts over JSON-RPC from a local stand-in, the 4.0 proof
in its own pool; v3 and v4 nullifiers tracked together; spent once across gateways."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from popgate.gateway.ops.config import ConfigError, load_config
from popgate.verifiers.worldid_rp import signer_address
from popgate.verifiers.worldid_v4 import parse_rp_id
from tests.conftest import admin_url, url_of
from tests.gateway.schemes.test_worldid import post
from tests.gateway.schemes.worldid_support import ENDPOINT, body, forget_nullifiers, worldid_toml
from tests.support.node import NODE_DIR, run_node
from tests.support.servers import serve_app, write_config
from tests.support.worldid_chain import V4ChainState, make_app

FIX = json.loads((Path(__file__).resolve().parents[2] / "fixtures/groth16/worldid_v4_local.json").read_text())
CASES = FIX["cases"]
NOW = FIX["created_at"] + 30


def chain_state() -> V4ChainState:
    root = int(FIX["chain"]["valid_roots"][0], 16)
    return V4ChainState(
        latest=root,
        issuer_keys={1: tuple(int(v, 16) for v in FIX["chain"]["issuer_keys"]["1"])},  # type: ignore[misc]
        oprf_keys={
            parse_rp_id(FIX["rp_id"]): tuple(int(v, 16) for v in FIX["chain"]["oprf_keys"][FIX["rp_id"]])
        },  # type: ignore[misc]
    )


def v4_toml(tmp: Path, rpc_port: int | None, **kw: Any) -> str:
    """[worldid] for the v3 fixtures plus [worldid.rp] (the fixture's test key) and
    [worldid.chain] (the stand-in at ``rpc_port``); no cloud_verify_url."""
    (tmp / "rp.key").write_text(FIX["rp_key"] + "\n")
    (tmp / "v4vk.json").write_text(json.dumps(FIX["vk"]))
    out = worldid_toml(action=FIX["action"], v4_vk_file=str(tmp / "v4vk.json"), **kw)
    out += (
        f'[worldid.rp]\nrp_id = "{FIX["rp_id"]}"\nkeys = [{{kid = "t1", secret_file = "{tmp / "rp.key"}"}}]\n'
    )
    if rpc_port is not None:
        out += (
            f'[worldid.chain]\nsource = "rpc"\nrpc_url = "http://127.0.0.1:{rpc_port}/"\npoll_interval = 60\n'
        )
    return out


def result(*items: dict[str, Any], nonce: str | None = None, version: str = "4.0") -> dict[str, Any]:
    return {
        "protocol_version": version,
        "nonce": nonce or CASES[0]["nonce"],
        "action": FIX["action"],
        "environment": "production",
        "responses": [copy.deepcopy(i) for i in items],
    }


def v4(i: int) -> dict[str, Any]:
    return {"result": result(CASES[i]["item"], nonce=CASES[i]["nonce"]), "signal": ""}


async def start(gateway_factory: Any, upstream: str, tmp: Path, port: int, **kw: Any) -> Any:
    gw = await gateway_factory(upstream, extra=v4_toml(tmp, port), **kw)
    gw.gateway.clock = lambda: NOW  # the fixture's nonces were signed at created_at
    return gw


async def test_v4_verified_locally_without_cloud(upstream, gateway_factory, http, tmp_path):
    state = chain_state()
    async with serve_app(make_app(state)) as port:
        gw = await start(gateway_factory, upstream, tmp_path, port)
        assert gw.gateway.services.config.features.worldid.cloud_verify_url == ""
        status, data, headers = await post(http, gw, v4(0))
        assert status == 200, data
        assert data["class"] == "human" and "HttpOnly" in headers["Set-Cookie"]
        async with http.get(url_of(gw, "/x"), headers={"Authorization": f"PoP {data['token']}"}) as r:
            assert (await r.json())["pop"]["PoP-Class"] == "human"
        assert CASES[0]["item"]["nullifier"][2:] not in json.dumps(data)
        # The chain was asked (registry state, issuer key, OPRF key); nothing else was.
        assert state.calls and all(n <= 2 for n in state.calls.values()), state.calls
        # Replays: the same result; the same person with a fresh request (new nonce).
        assert (await post(http, gw, v4(0)))[1]["reason"] == "replayed"  # its nonce was used
        status, data, _ = await post(http, gw, v4(1))
        assert (status, data["reason"]) == (409, "nullifier_reused")
        # Another person is another session.
        assert (await post(http, gw, v4(2)))[0] == 200
    async with http.get(admin_url(gw, "/metrics")) as r:
        text = await r.text()
    assert 'popgate_verification_seconds_count{scheme="worldid4"}' in text


NEGATIVES = [
    ("nonce of another request", lambda b: b["result"].update(nonce=CASES[1]["nonce"]), "invalid_proof", 401),
    ("nonce not issued here", lambda b: b["result"].update(nonce="0x" + "01" * 31), "invalid_nonce", 401),
    ("nonce missing", lambda b: b["result"].pop("nonce"), "malformed", 400),
    ("another action", lambda b: b["result"].update(action="vote"), "wrong_action", 400),
    ("a signal", lambda b: b.update(signal="hello"), "invalid_proof", 401),
    ("nullifier", lambda b: b["result"]["responses"][0].update(nullifier="0x1234"), "invalid_proof", 401),
    ("issuer", lambda b: b["result"]["responses"][0].update(issuer_schema_id=9303), "unknown_issuer", 401),
    ("root", lambda b: b["result"]["responses"][0]["proof"].__setitem__(4, "0x02"), "unknown_root", 401),
    ("session item", lambda b: b["result"]["responses"][0].update(session_nullifier=[1]), "malformed", 400),
    ("two v4 items", lambda b: b["result"]["responses"].append(CASES[1]["item"]), "malformed", 400),
]  # fmt: skip


async def test_v4_single_field_negatives(upstream, gateway_factory, http, tmp_path):
    """Each change of one field is refused for its own reason, and spends nothing."""
    async with serve_app(make_app(chain_state())) as port:
        gw = await start(gateway_factory, upstream, tmp_path, port)
        for name, mutate, reason, status in NEGATIVES:
            b = copy.deepcopy(v4(2))
            mutate(b)
            got, data, _ = await post(http, gw, b)
            assert (got, data["reason"]) == (status, reason), name
        assert (await post(http, gw, v4(2)))[0] == 200, "a refusal spends nothing"
        gw.gateway.clock = lambda: FIX["created_at"] + 301  # the rp_context ttl (300 s) has passed
        assert (await post(http, gw, v4(0)))[1]["reason"] == "invalid_nonce"


async def test_chain_unreachable_fails_closed(upstream, gateway_factory, http, tmp_path):
    state = chain_state()
    state.down = True
    async with serve_app(make_app(state)) as port:
        gw = await start(gateway_factory, upstream, tmp_path, port)
        status, data, headers = await post(http, gw, v4(0))
        assert (status, data["reason"]) == (503, "chain_unavailable") and "Retry-After" in headers
        state.down = False
        gw.gateway.clock = lambda: NOW + 61  # next poll interval: the chain answers again
        assert (await post(http, gw, v4(0)))[0] == 200


async def test_v3_and_v4_of_one_person_give_one_session(upstream, gateway_factory, http, tmp_path):
    """A result holding a v3 item (IDKit 4 legacy) and a v4 item: both verified, both
    nullifiers spent; neither opens a second session afterwards."""
    async with serve_app(make_app(chain_state())) as port:
        gw = await start(gateway_factory, upstream, tmp_path, port)
        v3_item = body(0, "idkit4_v3_item")["result"]
        both = {"result": result(v3_item, CASES[0]["item"], nonce=CASES[0]["nonce"]), "signal": ""}
        status, data, _ = await post(http, gw, both)
        assert status == 200, data
        assert (await post(http, gw, body(0)))[1]["reason"] == "nullifier_reused"  # v3 alone
        assert (await post(http, gw, v4(1)))[1]["reason"] == "nullifier_reused"  # v4 alone, new request


async def test_legacy_off_refuses_v3(upstream, gateway_factory, http, tmp_path):
    async with serve_app(make_app(chain_state())) as port:
        (tmp_path / "x").mkdir()
        gw = await gateway_factory(upstream, extra=v4_toml(tmp_path / "x", port, legacy=False))
        gw.gateway.clock = lambda: NOW
        status, data, _ = await post(http, gw, body(0))
        assert (status, data["reason"]) == (400, "unsupported_protocol")
        async with http.get(url_of(gw, ENDPOINT)) as r:
            assert (await r.json())["protocol_versions"] == ["4.0"]


async def test_offer_carries_an_rp_context_the_idkit4_sdk_accepts(upstream, gateway_factory, http, tmp_path):
    """GET (and the 402 way out) give IDKit.request's config; the signature recovers to the
    RP key's address with the SDK's own message builder, and the SDK's WASM core takes it."""
    async with serve_app(make_app(chain_state())) as port:
        gw = await gateway_factory(upstream, extra=v4_toml(tmp_path, port))
        async with http.get(url_of(gw, ENDPOINT)) as r:
            offer = await r.json()
        async with http.get(url_of(gw, "/api/x"), headers={"Accept": "application/json"}) as r:
            assert r.status == 402
            prove = [w for w in (await r.json(content_type=None))["ways_out"] if w["kind"] == "prove"]
    req = offer["idkit"]
    assert offer["protocol_versions"] == ["3.0", "4.0"] and req["rp_context"]["rp_id"] == FIX["rp_id"]
    assert req["allow_legacy_proofs"] is True and req["action"] == FIX["action"]
    assert prove and prove[0]["idkit"]["rp_context"]["nonce"] != req["rp_context"]["nonce"]
    script = NODE_DIR / "idkit4_rp_context.mjs"
    out = run_node(script, stdin=req)
    assert out["recovered"] == signer_address(bytes.fromhex(FIX["rp_key"]))
    assert out["accepted"] is True and out["error"] is None and out["bridge_posts"]
    bad = copy.deepcopy(req)  # the SDK does not check the signature (World App does): we do, with its message
    sig = bad["rp_context"]["signature"]
    bad["rp_context"]["signature"] = sig[:10] + ("0" if sig[10] != "0" else "1") + sig[11:]
    assert run_node(script, stdin=bad)["recovered"] != out["recovered"]
    bad["rp_context"]["rp_id"] = "app_" + FIX["rp_id"][3:]
    assert run_node(script, stdin=bad)["accepted"] is False
    # Cheaper 402s: no signature in the challenge, the client GETs its rp_context.
    (tmp_path / "lazy").mkdir()
    lazy = v4_toml(tmp_path / "lazy", None) + "in_challenge = false\n"  # in [worldid.rp]
    gw = await gateway_factory(upstream, extra=lazy)
    async with http.get(url_of(gw, "/api/x"), headers={"Accept": "application/json"}) as r:
        prove = [w for w in (await r.json(content_type=None))["ways_out"] if w["kind"] == "prove"]
    assert prove[0]["idkit"]["rp_context"] is None and prove[0]["idkit"]["rp_context_from"] == ENDPOINT
    async with http.get(url_of(gw, ENDPOINT)) as r:
        assert (await r.json())["idkit"]["rp_context"]["signature"].startswith("0x")


async def test_one_spend_across_two_gateways(upstream, gateway_factory, http, tmp_path, redis_url):
    """Two gateways on one Redis: the same person's two requests, one at each: one session."""
    await forget_nullifiers(redis_url)
    async with serve_app(make_app(chain_state())) as port:
        gws = []
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
            gw = await gateway_factory(upstream, extra=v4_toml(tmp_path / name, port), store=redis_url)
            gw.gateway.clock = lambda: NOW
            gws.append(gw)
        import asyncio  # why: only this test runs requests concurrently

        got = await asyncio.gather(post(http, gws[0], v4(0)), post(http, gws[1], v4(1)))
    statuses = sorted(s for s, _, _ in got)
    assert statuses == [200, 409], got


def test_config_problems(tmp_path):
    bad = worldid_toml() + '[worldid.chain]\nsource = "rpc"\nrpc_url = "ftp://x"\nverifier = "0x1"\n'
    bad += '[worldid.rp]\nrp_id = "app_1"\nkeys = [{kid = "k", secret_env = "POPGATE_TEST_UNSET_RP"}]\n'
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "http://127.0.0.1:9", extra=bad))
    text = str(err.value)
    for path in (
        "worldid.chain.rpc_url",
        "worldid.chain.verifier",
        "worldid.rp.rp_id",
        "worldid.rp.keys[0].secret_env",
    ):
        assert path in text, text
    (tmp_path / "k").write_text("zz" * 32)
    bad = (
        worldid_toml(legacy=False)
        + '[worldid.rp]\nrp_id = "rp_0000000000000001"\n'
        + f'keys = [{{kid = "k", secret_file = "{tmp_path / "k"}"}}]\n'
    )
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "http://127.0.0.1:9", extra=bad))
    assert "worldid.rp.keys[k]" in str(err.value) and "worldid.legacy" in str(err.value)


async def test_sessions_per_nullifier_and_rotation(upstream, gateway_factory, http, tmp_path):
    """v4 nullifiers follow sessions_per_nullifier like v3 ones (a nonce is still spent once);
    with rotate = "daily" the proof must be made for today's action, signed into rp_context."""
    async with serve_app(make_app(chain_state())) as port:
        (tmp_path / "a").mkdir()
        gw = await gateway_factory(upstream, extra=v4_toml(tmp_path / "a", port, sessions_per_nullifier=2))
        gw.gateway.clock = lambda: NOW
        assert (await post(http, gw, v4(0)))[0] == 200
        status, data, _ = await post(http, gw, v4(0))
        assert (status, data["reason"]) == (409, "replayed")  # the nonce was used...
        assert (await post(http, gw, v4(1)))[0] == 200  # ...and the replay used no session
        (tmp_path / "b").mkdir()
        gw = await gateway_factory(upstream, extra=v4_toml(tmp_path / "b", port, rotate="daily"))
        gw.gateway.clock = lambda: NOW
        async with http.get(url_of(gw, ENDPOINT)) as r:
            assert (await r.json())["idkit"]["action"] == CASES[3]["action"]
        rotated = {
            "result": {**result(CASES[3]["item"], nonce=CASES[3]["nonce"]), "action": CASES[3]["action"]}
        }
        assert (await post(http, gw, {**rotated, "signal": ""}))[0] == 200
        assert (await post(http, gw, v4(2)))[1]["reason"] == "wrong_action"  # un-rotated
