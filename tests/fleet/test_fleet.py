"""Three popgate processes on one real Redis: every exactly-once guarantee holds fleet-wide.

Covered here: sessions (issued by one instance, accepted by all; key rotation
by key id), session request budgets, server-issued puzzle solutions (both the
submit endpoint and the ``PoP-Puzzle`` header), self-minted hashcash stamps,
and GCRA rate limits. Credits debits, x402 nonces and World ID nullifiers are
not wired into the gateway yet (see THREAT_MODEL.md); their tests go here, on
the same ``fleet`` fixture, when they land.
"""

from __future__ import annotations

import asyncio
import json
import time

from popgate.verifiers import hashcash, puzzle

N = 3
PUZZLE = """
[puzzle]
keys = [{kid = "p1", secret_file = "{secret:puzzle-p1}"}]
session_budget = 7
[difficulty]
class_floor = {unknown = 10, agent = 10}
"""
JSON = {"Accept": "application/json"}


async def challenge(fleet, i: int = 0) -> dict:
    status, body = await fleet.get(i, "/", headers=JSON)
    assert status == 402, body
    return json.loads(body)


async def solved_puzzle(fleet, i: int = 0) -> str:
    ways = {w["kind"]: w for w in (await challenge(fleet, i))["ways_out"]}
    p = ways["puzzle"]
    nonces, _ = await asyncio.to_thread(puzzle.solve, p["challenge"], p["bits"], p["subs"])
    return f"{p['challenge']}:{','.join(nonces)}"


async def buy_session(fleet, i: int = 0) -> str:
    status, body = await fleet.post(
        i, "/.well-known/popgate/puzzle", json={"solution": await solved_puzzle(fleet, i)}, headers=JSON
    )
    assert status == 200, body
    return json.loads(body)["token"]


async def test_session_issued_by_one_instance_is_accepted_by_all(fleet):
    """A session bought on instance 0 (puzzle → token) opens every instance of the fleet."""
    f = await fleet(N, extra=PUZZLE)
    token = await buy_session(f, 0)
    for i in range(N):
        status, body = await f.get(i, "/hello", headers={"Authorization": f"PoP {token}"})
        assert status == 200, (i, body)


async def test_session_budget_is_shared_by_the_fleet(fleet):
    """A session good for 7 requests gets exactly 7, however they spread over the instances."""
    f = await fleet(N, extra=PUZZLE)
    token = await buy_session(f, 0)
    auth = {"Authorization": f"PoP {token}"}
    results = await asyncio.gather(*(f.get(i % N, "/hello", headers=auth) for i in range(21)))
    statuses = [s for s, _ in results]
    assert statuses.count(200) == 7, statuses
    assert set(statuses) <= {200, 401, 402}, statuses


async def test_puzzle_solution_is_spent_once_across_the_fleet(fleet):
    """One solution submitted concurrently to every instance (twice each) buys one session."""
    f = await fleet(N, extra=PUZZLE)
    solution = await solved_puzzle(f, 1)
    results = await asyncio.gather(
        *(
            f.post(i % N, "/.well-known/popgate/puzzle", json={"solution": solution}, headers=JSON)
            for i in range(2 * N)
        )
    )
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] + [403] * (2 * N - 1), results
    assert all(json.loads(b)["reason"] == "replayed" for s, b in results if s == 403)


async def test_puzzle_header_is_spent_once_across_the_fleet(fleet):
    """A solution presented directly in ``PoP-Puzzle`` lets exactly one request through."""
    f = await fleet(N, extra=PUZZLE)
    solution = await solved_puzzle(f, 2)
    results = await asyncio.gather(
        *(f.get(i % N, "/hello", headers={"PoP-Puzzle": solution, **JSON}) for i in range(2 * N))
    )
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] + [402] * (2 * N - 1), statuses


async def test_hashcash_stamp_is_spent_once_across_the_fleet(fleet):
    """A self-minted hashcash stamp is accepted by one instance once, never again anywhere."""
    f = await fleet(N, extra=PUZZLE)
    ways = {w["kind"]: w for w in (await challenge(f, 0))["ways_out"]}
    h = ways["hashcash"]
    stamp, _ = await asyncio.to_thread(hashcash.mint, h["resource"], h["bits"], time.time())
    results = await asyncio.gather(
        *(f.get(i % N, "/hello", headers={"X-Hashcash": stamp, **JSON}) for i in range(2 * N))
    )
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] + [402] * (2 * N - 1), statuses


THROTTLE_POLICY = """
version = 1
[default]
human = "allow"
account = "allow"
verified-agent = "allow"
agent = "allow"
unknown = "allow"

[[rules]]
name = "search"
route = "search"
path = "/search"
[rules.actions]
agent = { kind = "throttle", rate = "1/h", burst = 4, per = "network" }
unknown = { kind = "throttle", rate = "1/h", burst = 4, per = "network" }
"""


async def test_rate_limit_is_counted_once_for_the_fleet(fleet):
    """A GCRA limit (burst 4 + 1 per hour, per network) admits 5 requests fleet-wide, not 5 per
    instance (the limits-per-replica flaw)."""
    f = await fleet(N, policy=THROTTLE_POLICY)
    results = await asyncio.gather(*(f.get(i % N, "/search", headers=JSON) for i in range(15)))
    statuses = [s for s, _ in results]
    assert statuses.count(200) == 5, statuses
    assert set(statuses) == {200, 429}, statuses


def _rotate(i: int, text: str) -> str:
    """Instance 0 still signs with k1; instance 1 signs with k2 (both listed); instance 2 has
    finished the rotation and knows only k2."""
    k2 = '{kid = "k2", secret_file = "K2"}'
    k1 = text.split("keys = [", 1)[1].split("}", 1)[0] + "}"
    if i == 0:
        return text.replace("keys = [", f"keys = [{k2}, ", 1)
    if i == 1:
        return text.replace('signing_kid = "k1"', 'signing_kid = "k2"').replace(
            "keys = [", f"keys = [{k2}, ", 1
        )
    return (
        text.replace('signing_kid = "k1"', 'signing_kid = "k2"')
        .replace(k1, k2)
        .replace(', {kid = "k0"', ', {kid = "k0x"')
    )


async def test_key_rotation_by_key_id_across_the_fleet(fleet, tmp_path):
    """Mid-rotation the fleet accepts sessions signed with the old and the new key id; an
    instance that dropped the old key rejects old sessions and accepts new ones."""
    (tmp_path / "K2").write_bytes(b"2" * 48)

    def per_instance(i: int, text: str) -> str:
        return _rotate(i, text).replace('"K2"', f'"{tmp_path / "K2"}"')

    f = await fleet(N, per_instance=per_instance)
    assert f.configs[0].sessions.signing_kid == "k1" and f.configs[1].sessions.signing_kid == "k2"
    assert "k1" not in f.configs[2].sessions.keys
    now = time.time()
    old = f.codec(0).issue(klass="human", subject="human:rot", now=now, ttl=300)
    new = f.codec(1).issue(klass="human", subject="human:rot", now=now, ttl=300)
    assert old.split(".")[1] == "k1" and new.split(".")[1] == "k2"
    for i in (0, 1):
        for token in (old, new):
            status, body = await f.get(i, "/hello", headers={"Authorization": f"PoP {token}", **JSON})
            assert status == 200, (i, token[:6], body)
    status, _ = await f.get(2, "/hello", headers={"Authorization": f"PoP {new}", **JSON})
    assert status == 200
    status, body = await f.get(2, "/hello", headers={"Authorization": f"PoP {old}", **JSON})
    assert status in (401, 402), body


CHARGE_POLICY = """
version = 1
[default]
human = "allow"
account = "allow"
verified-agent = "allow"
agent = "allow"
unknown = "allow"

[[rules]]
name = "paid"
route = "paid"
path = "/paid/**"
action = { kind = "charge", price = "0.01" }
"""
ADMIN_TOKEN = "f" * 40


async def test_credits_debits_are_exactly_once_across_the_fleet(fleet, tmp_path):
    """An API key with a balance for 5 paid requests gets exactly 5, however many requests race
    over the instances; the ledger read from another instance reconciles to the balance."""
    (tmp_path / "admin-token").write_text(ADMIN_TOKEN)
    extra = f'[credits]\nadmin_token = {{ secret_file = "{tmp_path / "admin-token"}" }}\n'
    f = await fleet(N, extra=extra, policy=CHARGE_POLICY)
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with f.http.post(f.admin(0, "/admin/credits/keys"), json={"amount": 50_000}, headers=admin) as r:
        assert r.status == 201, await r.text()
        created = await r.json()
    auth = {"Authorization": f"Bearer {created['api_key']}", **JSON}
    results = await asyncio.gather(*(f.get(i % N, "/paid/x", headers=auth) for i in range(15)))
    statuses = [s for s, _ in results]
    assert statuses.count(200) == 5, statuses
    assert set(statuses) == {200, 402}, statuses
    async with f.http.get(
        f.admin(2, f"/admin/credits/accounts/{created['account']}/ledger"), headers=admin
    ) as r:
        entries = (await r.json())["entries"]
    assert [e["kind"] for e in entries].count("debit") == 5
    async with f.http.get(f.admin(1, f"/admin/credits/accounts/{created['account']}"), headers=admin) as r:
        assert (await r.json())["balance"] == 0


PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"


async def test_x402_payment_nonce_is_spent_once_across_the_fleet(fleet):
    """Copies of one signed x402 payment raced over every instance: one is served, one
    settlement happens, every other copy is refused."""
    from eth_account import Account
    from x402 import x402Client
    from x402.http.utils import decode_payment_required_header, encode_payment_signature_header
    from x402.mechanisms.evm.exact.register import register_exact_evm_client

    from tests.support.facilitator import running

    async with running() as (fac, state):
        extra = f'[x402]\nnetworks = ["eip155:84532"]\npay_to = "{PAY_TO}"\nfacilitator = "{fac}"\n'
        f = await fleet(N, extra=extra, policy=CHARGE_POLICY)
        async with f.http.get(f.url(0, "/paid/one")) as r:
            assert r.status == 402
            required = decode_payment_required_header(r.headers["PAYMENT-REQUIRED"])
        client = x402Client()
        register_exact_evm_client(client, Account.from_key("0x" + "77" * 32))
        header = encode_payment_signature_header(await client.create_payment_payload(required))
        results = await asyncio.gather(
            *(f.get(i % N, "/paid/one", headers={"PAYMENT-SIGNATURE": header}) for i in range(4 * N))
        )
        statuses = [s for s, _ in results]
        assert statuses.count(200) == 1, statuses
        assert statuses.count(402) == 4 * N - 1, statuses
        assert len(state.settled) == 1


async def test_worldid_nullifier_is_spent_once_across_the_fleet(fleet):
    """One World ID proof (one person, one action) posted to every instance at once buys
    exactly one session; every other instance answers nullifier_reused."""
    from tests.gateway.schemes.worldid_support import ENDPOINT, body, worldid_toml

    f = await fleet(N, extra=worldid_toml())
    results = await asyncio.gather(*(f.post(i % N, ENDPOINT, json=body(0)) for i in range(2 * N)))
    statuses = sorted(s for s, _ in results)
    assert statuses == [200] + [409] * (2 * N - 1), results
    assert all(json.loads(b)["reason"] == "nullifier_reused" for s, b in results if s == 409)
    token = next(json.loads(b)["token"] for s, b in results if s == 200)
    for i in range(N):
        status, body_ = await f.get(i, "/hello", headers={"Authorization": f"PoP {token}"})
        assert status == 200, body_
