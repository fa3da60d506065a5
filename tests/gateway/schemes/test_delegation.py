"""Delegations end to end over loopback HTTP: a human session delegates to agent keys
(Python Ed25519 via popgate.gateway.agent, JavaScript P-256 via tests/node/delegate_agent.mjs),
agents sign requests; quotas across 20 agents and two gateways on one real Redis; revocation;
a delegation never outliving or exceeding the session that made it."""

from __future__ import annotations

import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from popgate.gateway.agent import Delegated, public_jwk
from popgate.gateway.ops.config import ConfigError, load_config
from tests.conftest import session_token, url_of
from tests.gateway.schemes.fleet_support import fleet_configs
from tests.support.node import NODE_DIR, run_node
from tests.support.servers import write_config

ENDPOINT = "/.well-known/popgate/delegate"
HUMAN = "worldid:alice-pseudonym"


def extra(**over: Any) -> str:
    settings = {"daily_quota": 1000, "revocation_check": 1, **over}
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in settings.items())
    return f'[policy]\nagent = "challenge"\n[delegation]\n{lines}\n'


async def delegate(http: aiohttp.ClientSession, gw: Any, human: str, body: dict[str, Any]) -> tuple[int, Any]:
    async with http.post(url_of(gw, ENDPOINT), json=body, headers={"Authorization": f"PoP {human}"}) as r:
        return r.status, await r.json()


async def new_agent(http: aiohttp.ClientSession, gw: Any, human: str, **body: Any) -> Delegated:
    key = ed25519.Ed25519PrivateKey.generate()
    status, answer = await delegate(http, gw, human, {"jwk": public_jwk(key), **body})
    assert status == 201, answer
    return Delegated(answer["token"], answer["id"], key)


async def call(
    http: aiohttp.ClientSession, agent: Delegated, gw: Any, path: str = "/api/x", body: bytes | None = None
) -> tuple[int, Any]:
    url = url_of(gw, path)
    method = "POST" if body else "GET"
    async with http.request(method, url, data=body, headers=agent.headers(method, url, body)) as r:
        return r.status, await r.json()


async def test_python_agent_gets_through_backed_by_its_human(upstream, gateway_factory, http):
    """A delegated Ed25519 agent's signed GET and POST reach the origin as `backed-agent`, with
    PoP-Backed-By the human's pseudonym and PoP-Evidence delegation; no credential leaks."""
    gw = await gateway_factory(upstream, extra=extra())
    human = session_token(gw, "human", subject=HUMAN, ttl=600)
    agent = await new_agent(http, gw, human, scope="/api/", ttl=300)
    for body in (None, b'{"order": 1}'):
        status, seen = await call(http, agent, gw, "/api/orders", body)
        assert status == 200, seen
        assert seen["pop"]["PoP-Class"] == "backed-agent"
        assert seen["pop"]["PoP-Backed-By"] == HUMAN
        assert seen["pop"]["PoP-Evidence"] == "delegation"
        assert "authorization" not in {k.lower() for k in seen["headers"]}
    # the agent's unsigned token, or one signed by another key, is worth nothing
    async with http.get(url_of(gw, "/api/x"), headers={"Authorization": f"PoP {agent.token}"}) as r:
        assert r.status == 402 and (await r.json())["reason"] == "signature_required"
    thief = Delegated(agent.token, agent.keyid, ed25519.Ed25519PrivateKey.generate())
    status, problem = await call(http, thief, gw)
    assert status == 402 and problem["reason"] == "bad_signature"


async def test_javascript_agent_readme_example(upstream, gateway_factory):
    """tests/node/delegate_agent.mjs (WebCrypto P-256, the README's JS client) delegates and
    gets through with PoP-Backed-By, a signed body included."""
    gw = await gateway_factory(upstream, extra=extra())
    human = session_token(gw, "human", subject=HUMAN, ttl=600)
    job = {
        "gateway": url_of(gw, "").rstrip("/"),
        "human_session": human,
        "scope": "/api/",
        "ttl": 300,
        "requests": [["GET", "/api/x"], ["POST", "/api/orders", '{"n":1}']],
    }
    out = await asyncio.to_thread(run_node, NODE_DIR / "delegate_agent.mjs", stdin=job)
    assert out["delegation"]["backed_by"] == HUMAN and out["delegation"]["class"] == "backed-agent"
    for answer in out["answers"]:
        assert answer["status"] == 200, answer
        seen = json.loads(answer["body"])
        assert seen["pop"]["PoP-Backed-By"] == HUMAN and seen["pop"]["PoP-Class"] == "backed-agent"
    assert json.loads(out["answers"][1]["body"])["body_length"] == 7


async def test_daily_quota_holds_across_20_agents_and_two_gateways(
    upstream, redis_url, tmp_path, gateway_factory, http
):
    """One human, 20 agent keys, 60 requests (waves of 20 at once) over two gateways sharing Redis:
    exactly `daily_quota` (30) get through; the rest are refused `delegation_quota`."""
    a_cfg, b_cfg = fleet_configs(tmp_path, upstream, store=redis_url, extra=extra(daily_quota=30))
    a, b = await gateway_factory(upstream, config=a_cfg), await gateway_factory(upstream, config=b_cfg)
    human = session_token(a, "human", subject=HUMAN, ttl=600)
    agents = [await new_agent(http, (a, b)[i % 2], human, ttl=300) for i in range(20)]
    results = []
    for wave in range(3):  # 20 at once (each key once, both gateways), three waves
        batch = (call(http, agents[i], (a, b)[(i + wave) % 2]) for i in range(20))
        results += await asyncio.gather(*batch)
    statuses = [s for s, _ in results]
    assert statuses.count(200) == 30, statuses
    assert all(p["reason"] == "delegation_quota" for s, p in results if s != 200)
    # another human's agents are counted apart
    other = session_token(a, "human", subject="worldid:bob", ttl=600)
    status, seen = await call(http, await new_agent(http, b, other, ttl=300), b)
    assert status == 200 and seen["pop"]["PoP-Backed-By"] == "worldid:bob"


async def test_revocation_takes_effect_within_the_bound(upstream, redis_url, tmp_path, gateway_factory, http):
    """DELETE by the human: both gateways refuse the agent within revocation_check (1 s);
    another human cannot revoke it."""
    a_cfg, b_cfg = fleet_configs(tmp_path, upstream, store=redis_url, extra=extra(revocation_check=1))
    a, b = await gateway_factory(upstream, config=a_cfg), await gateway_factory(upstream, config=b_cfg)
    human = session_token(a, "human", subject=HUMAN, ttl=600)
    agent = await new_agent(http, a, human, ttl=300)
    for gw in (a, b):
        assert (await call(http, agent, gw))[0] == 200
    bob = session_token(a, "human", subject="worldid:bob", ttl=600)
    revoke = url_of(b, f"{ENDPOINT}?id={agent.keyid}")
    async with http.delete(revoke, headers={"Authorization": f"PoP {bob}"}) as r:
        assert r.status == 404
    async with http.delete(revoke, headers={"Authorization": f"PoP {human}"}) as r:
        assert r.status == 204
    revoked_at = time.monotonic()
    refused_after: dict[int, float] = {}
    while len(refused_after) < 2 and time.monotonic() - revoked_at < 5:
        for i, gw in enumerate((a, b)):
            status, problem = await call(http, agent, gw)
            if status != 200 and i not in refused_after:
                assert problem["reason"] == "delegation_revoked"
                refused_after[i] = time.monotonic() - revoked_at
        await asyncio.sleep(0.05)
    assert len(refused_after) == 2 and max(refused_after.values()) <= 1.5, refused_after
    for gw in (a, b):
        assert (await call(http, agent, gw))[0] == 402


async def test_delegation_never_outlives_or_exceeds_its_session(upstream, gateway_factory, http):
    """Longer than the session, wider than its scope, more than its budget: 403 exceeds_session;
    the default length is the session's; only a person's session may delegate."""
    gw = await gateway_factory(upstream, extra=extra())
    human = session_token(gw, "human", subject=HUMAN, ttl=120, scope="/api")
    jwk = public_jwk(ed25519.Ed25519PrivateKey.generate())
    now = int(time.time())
    for body in (
        {"jwk": jwk, "ttl": 600},
        {"jwk": jwk, "expires": now + 10_000},
        {"jwk": jwk, "scope": "/"},
        {"jwk": jwk, "scope": "/admin/"},
    ):
        status, problem = await delegate(http, gw, human, body)
        assert (status, problem["reason"]) == (403, "exceeds_session"), (body, problem)
    status, answer = await delegate(http, gw, human, {"jwk": jwk})
    assert status == 201 and answer["expires"] <= now + 121 and answer["scope"] == "/api"
    budgeted = session_token(gw, "human", subject=HUMAN, ttl=120, budget=5)
    assert (await delegate(http, gw, budgeted, {"jwk": jwk}))[1]["reason"] == "exceeds_session"
    assert (await delegate(http, gw, budgeted, {"jwk": jwk, "quota": 5}))[0] == 201
    for klass in ("account", "agent"):
        status, problem = await delegate(http, gw, session_token(gw, klass), {"jwk": jwk})
        assert (status, problem["reason"]) == (401, "not_a_person")
    status, problem = await delegate(http, gw, answer["token"], {"jwk": jwk})  # no re-delegation
    assert (status, problem["reason"]) == (401, "not_a_person")
    async with http.post(url_of(gw, ENDPOINT), json={"jwk": jwk}) as r:
        assert r.status == 401
    for bad in (
        {"jwk": {"kty": "RSA", "n": "x", "e": "AQAB"}},
        {"jwk": {**jwk, "d": "secret"}},
        {"jwk": jwk, "quota": 0},
    ):
        status, problem = await delegate(http, gw, human, bad)
        assert (status, problem["reason"]) == (400, "malformed"), bad


async def test_scope_expiry_and_per_delegation_quota(upstream, gateway_factory, http):
    """Outside its scope, past its expiry, beyond its own quota, or tampered with: not backed."""
    gw = await gateway_factory(upstream, extra=extra())
    human = session_token(gw, "human", subject=HUMAN, ttl=600)
    agent = await new_agent(http, gw, human, scope="/api/", ttl=300, quota=2)
    assert (await call(http, agent, gw, "/api/a"))[0] == 200
    status, problem = await call(http, agent, gw, "/other")
    assert (status, problem["reason"]) == (402, "session_out_of_scope")
    assert (await call(http, agent, gw, "/api/b"))[0] == 200
    status, problem = await call(http, agent, gw, "/api/c")
    assert (status, problem["reason"]) == (402, "session_budget_spent")
    p256 = ec.generate_private_key(ec.SECP256R1())
    status, answer = await delegate(http, gw, human, {"jwk": public_jwk(p256), "ttl": 1})
    short = Delegated(answer["token"], answer["id"], p256)
    assert (await call(http, short, gw))[0] == 200
    await asyncio.sleep(1.1)
    status, problem = await call(http, short, gw)
    assert (status, problem["reason"]) == (402, "session_expired")
    forged = Delegated(
        agent.token[:-3] + ("AAA" if agent.token[-3:] != "AAA" else "BBB"), agent.keyid, agent.key
    )
    status, problem = await call(http, forged, gw, "/api/a")
    assert (status, problem["reason"]) == (402, "invalid_session")


def test_config_problems_have_key_paths(tmp_path: Path) -> None:
    bad = '[delegation]\nfrom_classes = ["backed-agent"]\ndaily_quota = -1\n'
    bad += 'revocation_check = "soon"\nbogus = 1\n'
    with pytest.raises(ConfigError) as e:
        load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=bad))
    text = "\n".join(e.value.problems)
    for path in (
        "delegation.from_classes",
        "delegation.daily_quota",
        "delegation.revocation_check",
        "delegation.bogus",
    ):
        assert path in text, text


def readme_block(lang: str, marker: str) -> str:
    """The README's ``lang`` code block containing ``marker`` (the Delegations section)."""
    text = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    blocks = re.findall(rf"```{lang}\n(.*?)```", text, re.S)
    return next(b for b in blocks if marker in b)


async def test_readme_python_and_js_examples_run(upstream, gateway_factory, tmp_path):
    """The README's delegation examples, run as written against a gateway: the Python one
    posts a signed body, the JS one (node) a signed GET; both reach the origin as backed agents."""
    gw = await gateway_factory(upstream, extra=extra())
    human = session_token(gw, "human", subject=HUMAN, ttl=7200)
    gateway = url_of(gw, "").rstrip("/")
    py = readme_block("python", "popgate.gateway.agent import Delegated")
    printed: list[str] = []
    scope = {
        "GATEWAY": gateway,
        "HUMAN_SESSION": human,
        "print": lambda *a: printed.append(" ".join(map(str, a))),
    }
    await asyncio.to_thread(exec, compile(py, "README.md", "exec"), scope)
    assert printed == ["200"] and scope["r"].json()["pop"]["PoP-Backed-By"] == HUMAN
    js = readme_block("js", "crypto.subtle.generateKey")
    script = tmp_path / "readme_example.mjs"
    script.write_text(
        f"const GATEWAY = {json.dumps(gateway)};\nconst HUMAN_SESSION = {json.dumps(human)};\n{js}\n"
        "process.stdout.write(JSON.stringify({status: r.status, body: await r.json()}));\n"
    )
    out = await asyncio.to_thread(run_node, script)
    assert out["status"] == 200, out
    assert out["body"]["pop"]["PoP-Class"] == "backed-agent" and out["body"]["pop"]["PoP-Backed-By"] == HUMAN


async def test_delegations_per_person_are_rate_limited(upstream, gateway_factory, http):
    """A person making delegations in a loop gets 429 past rate_limit per rate_window."""
    gw = await gateway_factory(upstream, extra=extra(rate_limit=3))
    human = session_token(gw, "human", subject=HUMAN, ttl=600)
    codes = []
    for _ in range(5):
        status, _answer = await delegate(
            http, gw, human, {"jwk": public_jwk(ed25519.Ed25519PrivateKey.generate())}
        )
        codes.append(status)
    assert codes == [201, 201, 201, 429, 429]


async def test_delegation_limited_to_policy_routes(upstream, gateway_factory, http, tmp_path):
    """`routes` limits a delegation to named policy rules/routes: through on `reports`, 403
    `delegation_out_of_scope` on any other rule, before anything is charged."""
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[default]\nall = "challenge"\nbacked-agent = "allow"\n'
        '[[rules]]\nname = "reports"\npath = "/reports/**"\naction = "allow"\n'
        '[[rules]]\nname = "paid"\npath = "/paid/**"\n'
        'actions.backed-agent = { kind = "charge", price = "0.01" }\n'
    )
    gw = await gateway_factory(upstream, extra=f'[policy]\nfile = "{policy}"\n[delegation]\n')
    human = session_token(gw, "human", subject=HUMAN, ttl=600)
    agent = await new_agent(http, gw, human, routes=["reports"])
    status, seen = await call(http, agent, gw, "/reports/q1")
    assert status == 200 and seen["pop"]["PoP-Backed-By"] == HUMAN
    for path in ("/api/x", "/paid/x"):
        status, problem = await call(http, agent, gw, path)
        assert (status, problem["reason"]) == (403, "delegation_out_of_scope"), (path, problem)
    free = await new_agent(http, gw, human)
    assert (await call(http, free, gw, "/api/x"))[0] == 200
    for bad in (["no spaces allowed"], [], "reports"):
        key = ed25519.Ed25519PrivateKey.generate()
        status, problem = await delegate(http, gw, human, {"jwk": public_jwk(key), "routes": bad})
        assert (status, problem["reason"]) == (400, "malformed"), bad
