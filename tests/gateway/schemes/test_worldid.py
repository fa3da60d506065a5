"""World ID end to end over loopback HTTP: real proofs → sessions → the upstream."""

from __future__ import annotations

import re

import pytest

from popgate.gateway.ops.config import ConfigError, load_config
from tests.conftest import url_of
from tests.gateway.schemes.worldid_support import APP_ID, CASES, ENDPOINT, ROOT, body, worldid_toml
from tests.support.servers import write_config


async def post(http, gw, payload, **kw):
    async with http.post(url_of(gw, ENDPOINT), json=payload, **kw) as r:
        return r.status, await r.json(content_type=None), r.headers


async def test_proof_buys_human_session_that_reaches_upstream(upstream, gateway_factory, http):
    """A real proof → 200 + cookie + token; the session is forwarded as PoP-Class: human;
    the subject is a keyed pseudonym, never the nullifier; a replay is refused."""
    gw = await gateway_factory(upstream, extra=worldid_toml())
    status, data, headers = await post(http, gw, body(0))
    assert status == 200, data
    assert data["class"] == "human" and data["action"] == "verify-human"
    nullifier = CASES[0]["idkit2_result"]["nullifier_hash"]
    assert nullifier[2:] not in str(data) and nullifier[2:] not in data["subject"]
    cookie = headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie
    assert cookie.startswith(f"popgate_session={data['token']}")
    async with http.get(url_of(gw, "/api/x"), headers={"Authorization": f"PoP {data['token']}"}) as r:
        assert r.status == 200
        info = await r.json()
    assert info["pop"]["PoP-Class"] == "human"
    assert info["pop"]["PoP-Subject"] == data["subject"]
    assert info["pop"]["PoP-Evidence"] == "worldid"
    async with http.get(url_of(gw, "/api/y"), headers={"Cookie": f"popgate_session={data['token']}"}) as r:
        assert r.status == 200 and (await r.json())["pop"]["PoP-Class"] == "human"
    # The same person, same action: refused, whatever the spelling of the nullifier.
    for spelling in (
        nullifier,
        nullifier.upper().replace("0X", "0x"),
        str(int(nullifier, 16)),
        "0x" + nullifier[2:].lstrip("0"),
    ):
        status, data2, _ = await post(http, gw, body(0, nullifier_hash=spelling))
        assert (status, data2["reason"]) == (409, "nullifier_reused"), spelling
    # Another person (the 4.x v3 item shape, a signal) gets a session of their own.
    status, data3, _ = await post(http, gw, body(1, "idkit4_v3_item"))
    assert status == 200 and data3["subject"] != data["subject"]
    pool = gw.gateway.endpoints[ENDPOINT].pool
    assert pool.stats["pooled"] == 2, pool.stats  # re-spellings were verdict-cache hits


async def test_rejections_have_stable_reasons(upstream, gateway_factory, http):
    """malformed / unknown_root (no pairing) / invalid_proof / signal / wrong action."""
    gw = await gateway_factory(upstream, extra=worldid_toml())
    pool = gw.gateway.endpoints[ENDPOINT].pool
    bad_root = "0x" + "1" * 64
    status, data, _ = await post(http, gw, body(0, merkle_root=bad_root))
    assert (status, data["reason"]) == (401, "unknown_root")
    assert pool.stats["pooled"] == 0, "an unknown root is refused before any pairing"
    wrong_signal = {"result": body(0)["result"], "signal": "not what was proved"}
    status, data, _ = await post(http, gw, wrong_signal)
    assert (status, data["reason"]) == (401, "invalid_proof")
    status, data, _ = await post(http, gw, body(2))  # made for action "vote"
    assert (status, data["reason"]) == (401, "invalid_proof")
    for junk in ({"result": {"proof": "0x12"}}, {"result": 5}, [1, 2]):
        status, data, _ = await post(http, gw, junk)
        assert (status, data["reason"]) == (400, "malformed"), junk
    status, data, _ = await post(http, gw, {"result": {**body(0)["result"], "action": "vote"}})
    assert (status, data["reason"]) == (400, "wrong_action")
    async with http.post(url_of(gw, ENDPOINT), data=b"{" + b" " * 20000 + b"}") as r:
        assert r.status == 413
    # Still fine for the honest client afterwards.
    status, data, _ = await post(http, gw, body(0))
    assert status == 200


async def test_sessions_per_nullifier_and_verdict_cache(upstream, gateway_factory, http):
    """sessions_per_nullifier = 2: two sessions, the third refused; one pairing in all."""
    gw = await gateway_factory(upstream, extra=worldid_toml(sessions_per_nullifier=2))
    results = [await post(http, gw, body(0)) for _ in range(3)]
    assert [s for s, _, _ in results] == [200, 200, 409]
    assert results[0][1]["subject"] == results[1][1]["subject"]
    pool = gw.gateway.endpoints[ENDPOINT].pool
    assert pool.stats["pooled"] == 1 and pool.stats["cached"] == 2


async def test_challenge_lists_prove_way_out_and_get_describes_it(upstream, gateway_factory, http):
    """An unverified client's 402 tells it how to prove personhood."""
    gw = await gateway_factory(upstream, extra=worldid_toml(rotate="daily"))
    async with http.get(url_of(gw, "/api/x"), headers={"Accept": "application/json"}) as r:
        assert r.status == 402
        problem = await r.json(content_type=None)
    prove = [w for w in problem["ways_out"] if w["kind"] == "prove"]
    assert len(prove) == 1 and prove[0]["method"] == "worldid"
    assert prove[0]["app_id"] == APP_ID and prove[0]["endpoint"] == ENDPOINT
    assert re.fullmatch(r"verify-human/d\d+", prove[0]["action"])
    async with http.get(url_of(gw, ENDPOINT)) as r:
        assert r.status == 200 and (await r.json())["action"] == prove[0]["action"]
    # A proof for the un-rotated action is not a proof for today's action.
    status, data, _ = await post(http, gw, body(0))
    assert (status, data["reason"]) == (401, "invalid_proof")


async def test_rate_gate_before_pool(upstream, gateway_factory, http):
    """Beyond gate_rate pool jobs per network: 429 with Retry-After, no pool slot spent."""
    gw = await gateway_factory(upstream, extra=worldid_toml(gate_rate=2, gate_window=60))
    pool = gw.gateway.endpoints[ENDPOINT].pool
    for signal in ("a", "b"):
        status, data, _ = await post(http, gw, {"result": body(0)["result"], "signal": signal})
        assert data["reason"] == "invalid_proof"
    status, data, headers = await post(http, gw, {"result": body(0)["result"], "signal": "c"})
    assert (status, data["reason"]) == (429, "rate_limited") and headers["Retry-After"] == "60"
    assert pool.stats["pooled"] == 2
    status, data, _ = await post(http, gw, {"result": body(0)["result"], "signal": "a"})
    assert data["reason"] == "invalid_proof", "a cached verdict needs no gate"


def test_config_problems_are_all_reported(tmp_path):
    """Every [worldid] problem is listed with its key path, at start-up."""
    from popgate.gateway.app import build_app
    from popgate.gateway.extensions import default_extensions
    from popgate.gateway.stores.memory import MemoryStore

    extra = (
        '\n[worldid]\naction = 5\nrotate = "hourly"\nsessions_per_nullifier = 0\n'
        'key = "semaphore_v9:3"\nbogus = 1\n[worldid.roots]\nsource = "rpc"\n'
        'rpc_url = "ftp://x"\ncontract = "0x12"\n'
    )
    with pytest.raises(ConfigError) as err:  # raised by load_config: every table in one pass
        build_app(
            load_config(write_config(tmp_path, "http://127.0.0.1:9", extra=extra)),
            store=MemoryStore(),
            extensions=default_extensions(),
        )
    text = str(err.value)
    for path in (
        "worldid.app_id",
        "worldid.action",
        "worldid.rotate",
        "worldid.key",
        "worldid.sessions_per_nullifier",
        "worldid.bogus",
        "worldid.roots.rpc_url",
        "worldid.roots.contract",
    ):
        assert path in text, (path, text)


def test_absent_table_means_off(tmp_path):
    from popgate.gateway.app import build_app
    from popgate.gateway.extensions import default_extensions
    from popgate.gateway.stores.memory import MemoryStore

    gw = build_app(
        load_config(write_config(tmp_path, "http://127.0.0.1:9")),
        store=MemoryStore(),
        extensions=default_extensions(),
    )
    assert ENDPOINT not in gw.endpoints


_ = ROOT


def test_rotated_action_and_claim_ttl():
    """daily: action/d<unix days>, weekly: action/w<unix weeks>; claims outlive their period."""
    from popgate.gateway.schemes.worldid import claim_ttl, current_action
    from popgate.gateway.schemes.worldid_config import parse_settings

    base = {"app_id": APP_ID, "action": "vote", "roots": {"roots": [ROOT]}}
    t = 20000 * 86400 + 3600.0
    none = parse_settings(base, "memory://")
    daily = parse_settings({**base, "rotate": "daily"}, "memory://")
    weekly = parse_settings({**base, "rotate": "weekly"}, "memory://")
    assert current_action(none, t) == "vote" and claim_ttl(none, t) > 5 * 365 * 86400
    assert current_action(daily, t) == "vote/d20000"
    assert current_action(daily, t + 86400 - 3601) == "vote/d20000"
    assert current_action(daily, t + 86400 - 3600) == "vote/d20001"
    assert current_action(weekly, t) == f"vote/w{20000 // 7}"
    assert 86400 < claim_ttl(daily, t) <= 2 * 86400
