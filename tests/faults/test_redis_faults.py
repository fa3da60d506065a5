"""Redis killed, restarted and slowed under load, with real components.

The gateway runs in-process against a real redis-server (AOF, fsync always,
so a SIGKILL loses nothing acknowledged) while clients hammer three kinds of
request: prepaid-credit debits (``debit``, closed), budgeted sessions
(``budget``, closed or open) and plain sessions (no store at all)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from popgate.gateway.payments.ledger import reconcile
from tests.conftest import admin_url, session_token, url_of
from tests.faults.support import delaying_proxy, durable_redis, sample
from tests.support.paid_gateway import ChargePolicy

TOKEN = "t" * 40
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
PRICE = 1_000


async def credits_gateway(factory, upstream, tmp_path, store, extra=""):
    (tmp_path / "admin").write_text(TOKEN)
    gw = await factory(
        upstream,
        store=store,
        extra=f"""
[credits]
admin_token = {{ secret_file = "{tmp_path / "admin"}" }}
{extra}""",
    )
    gw.gateway.policy.policy = ChargePolicy(PRICE, prefix="/hello", route="hello")
    return gw


async def new_key(http, gw, amount):
    async with http.post(admin_url(gw, "/admin/credits/keys"), json={"amount": amount}, headers=ADMIN) as r:
        assert r.status == 201, await r.text()
        body = await r.json()
    return body["api_key"], body["account"]


async def hit(http, url, headers):
    t0 = time.monotonic()
    async with http.get(url, headers=headers) as r:
        reason = (await r.json()).get("reason") if r.status >= 400 else None
        return r.status, reason, r.headers.get("Retry-After"), time.monotonic() - t0


async def load(http, plan, seconds, workers=6):
    """Run every (name, url, headers) in ``plan`` from ``workers`` loops for
    ``seconds`` (bounded: at most 2000 requests per loop); results by name."""
    results: dict[str, list] = {name: [] for name, _, _ in plan}
    deadline = time.monotonic() + seconds

    async def loop():
        for _ in range(2000):
            if time.monotonic() > deadline:
                return
            for name, url, headers in plan:
                results[name].append(await hit(http, url, headers))

    await asyncio.gather(*(loop() for _ in range(workers)))
    return results


async def test_redis_killed_and_restarted_mid_load(upstream, gateway_factory, http, tmp_path):
    """SIGKILL Redis under load, restart it 1 s later: store-bound requests get
    503 + Retry-After (never 500, never a hang), store-free sessions keep
    getting 200, service resumes by itself, every served paid request has its
    debit in the ledger, the ledger reconciles and no budget is spent twice."""
    with durable_redis() as redis:
        gw = await credits_gateway(gateway_factory, upstream, tmp_path, redis.url)
        api_key, account = await new_key(http, gw, 10_000_000)
        # Budgets on a second gateway with the shipped default policy (unknown → 402).
        gw2 = await gateway_factory(upstream, store=redis.url)
        budget = 40
        budgeted = session_token(gw2, budget=budget)
        plain = session_token(gw2)
        plan = [
            ("paid", url_of(gw, "/hello"), {"Authorization": f"Bearer {api_key}"}),
            ("budget", url_of(gw2, "/"), {"Authorization": f"PoP {budgeted}"}),
            ("plain", url_of(gw2, "/"), {"Authorization": f"PoP {plain}"}),
        ]

        async def chaos():
            await asyncio.sleep(0.8)
            redis.kill()
            await asyncio.sleep(1.0)
            redis.start()

        results, _ = await asyncio.gather(load(http, plan, 4.0), chaos())

        for name, rows in results.items():
            statuses = Counter(s for s, *_ in rows)
            assert set(statuses) <= {200, 402, 503}, (name, statuses)
            assert all(dt < 5 for *_, dt in rows), f"{name}: a request took too long"
            for status, reason, retry, _ in rows:
                if status == 503:
                    assert reason == "store_unavailable" and retry, (name, reason, retry)
        assert {s for s, *_ in results["plain"]} == {200}, "store-free sessions never see the outage"
        paid = Counter(s for s, *_ in results["paid"])
        assert paid[503] > 0 and paid[200] > 0, paid
        budget_ok = sum(1 for s, *_ in results["budget"] if s == 200)
        assert budget_ok <= budget, "a budget unit was spent twice"

        # Back by itself, and the store holds exactly what was served.
        for _ in range(50):
            status, *_ = await hit(http, url_of(gw, "/hello"), plan[0][2])
            if status == 200:
                break
            await asyncio.sleep(0.1)
        assert status == 200
        store = gw.gateway.services.store
        entries = await store.ledger(account, limit=100_000)
        reconcile(await store.balance(account), entries)
        debits = sum(1 for e in entries if e.kind == "debit")
        refunds = sum(1 for e in entries if e.kind == "refund")
        served = paid[200] + 1
        assert debits - refunds >= served, "a served request has no ledger entry"
        assert debits - refunds == served, f"{debits - refunds - served} debits for 503'd requests"
        reg = gw.gateway.metrics.registry
        assert sample(reg, "popgate_store_errors_total", {"action": "debit"}) >= paid[503]
        reg2 = gw2.gateway.metrics.registry
        assert sample(reg2, "popgate_store_errors_total", {"action": "budget"}) == sum(
            1 for s, *_ in results["budget"] if s == 503
        )
        assert sample(reg2, "popgate_fail_open_total", {"action": "budget"}) == 0


async def test_budget_fail_open_is_counted_and_budget_survives_restart(
    upstream, gateway_factory, http, tmp_path
):
    """``budget = "open"``: during the outage budgeted sessions pass and each pass
    is counted in popgate_fail_open_total; units spent before the crash are
    still spent after the restart (AOF), so a used-up budget stays used up."""
    with durable_redis() as redis:
        gw = await gateway_factory(upstream, store=redis.url, extra='[store.failure_mode]\nbudget = "open"\n')
        token = session_token(gw, budget=3)
        headers = {"Authorization": f"PoP {token}"}
        assert [(await hit(http, url_of(gw, "/"), headers))[0] for _ in range(4)] == [200, 200, 200, 402]
        redis.kill()
        during = [(await hit(http, url_of(gw, "/"), headers))[0] for _ in range(5)]
        assert during == [200] * 5
        reg = gw.gateway.metrics.registry
        assert sample(reg, "popgate_fail_open_total", {"action": "budget"}) == 5
        redis.start()
        for _ in range(50):
            status, reason, *_ = await hit(http, url_of(gw, "/"), headers)
            if status != 200:
                break
            await asyncio.sleep(0.1)
        assert (status, reason) == (402, "session_budget_spent")


@pytest.mark.parametrize("mode", ["closed", "open"])
async def test_slow_redis_is_bounded_and_does_not_pile_up(upstream, gateway_factory, http, tmp_path, mode):
    """Redis answering 3 s late (a delaying TCP proxy) with 60 concurrent
    store-bound requests: each ends within ~timeout (+ the bounded pool wait),
    as 503 (closed) or 200 counted as fail-open (open); store-free traffic is
    unaffected meanwhile; when Redis is fast again, so is popgate."""
    with durable_redis() as redis:
        async with delaying_proxy(redis.port) as ctl:
            extra = f'[store]\ntimeout = 0.3\n[store.failure_mode]\nbudget = "{mode}"\n'
            # store.timeout lives in [store]; write_config already opened [store]: use url only
            gw = await gateway_factory(
                upstream,
                store=f"redis://127.0.0.1:{int(ctl['port'])}/0",
                extra=extra.replace("[store]\ntimeout = 0.3\n", ""),
            )
            budgeted = session_token(gw, budget=1_000_000)
            plain = session_token(gw)
            assert (await hit(http, url_of(gw, "/"), {"Authorization": f"PoP {budgeted}"}))[0] == 200
            ctl["delay"] = 3.0
            t0 = time.monotonic()
            slow, fast = await asyncio.gather(
                asyncio.gather(
                    *(hit(http, url_of(gw, "/"), {"Authorization": f"PoP {budgeted}"}) for _ in range(60))
                ),
                asyncio.gather(
                    *(hit(http, url_of(gw, "/"), {"Authorization": f"PoP {plain}"}) for _ in range(20))
                ),
            )
            took = time.monotonic() - t0
            want = 503 if mode == "closed" else 200
            assert {s for s, *_ in slow} == {want}, Counter(s for s, *_ in slow)
            assert max(dt for *_, dt in slow) < 3.0, "store timeouts are not bounded"
            assert took < 3.5
            assert max(dt for *_, dt in fast) < 1.0, "store-free requests queued behind the store"
            reg = gw.gateway.metrics.registry
            opened = sample(reg, "popgate_fail_open_total", {"action": "budget"})
            assert opened == (60 if mode == "open" else 0)
            ctl["delay"] = 0.0
            for _ in range(50):
                status, *_, dt = await hit(http, url_of(gw, "/"), {"Authorization": f"PoP {budgeted}"})
                if status == 200 and dt < 0.2:
                    break
                await asyncio.sleep(0.1)
            assert status == 200 and dt < 0.2


async def test_slow_redis_debits_that_time_out_are_not_billed(upstream, gateway_factory, http, tmp_path):
    """Debits that time out (Redis 1 s late, timeout 0.5 s) answer 503; Redis
    may still apply them later, so popgate must not leave the client billed
    for a request it refused: once Redis is fast again, balance and ledger
    show exactly the served requests (net of compensating refunds)."""
    with durable_redis() as redis:
        async with delaying_proxy(redis.port) as ctl:
            gw = await credits_gateway(
                gateway_factory, upstream, tmp_path, f"redis://127.0.0.1:{int(ctl['port'])}/0"
            )
            api_key, account = await new_key(http, gw, 1_000_000)
            auth = {"Authorization": f"Bearer {api_key}"}
            assert (await hit(http, url_of(gw, "/hello"), auth))[0] == 200
            ctl["delay"] = 1.0
            slow = await asyncio.gather(*(hit(http, url_of(gw, "/hello"), auth) for _ in range(20)))
            assert {s for s, *_ in slow} == {503}
            ctl["delay"] = 0.0
            store = gw.gateway.services.store
            await asyncio.sleep(2.5)  # late debits land (1 s), compensations run
            bal = await store.balance(account)
            entries = await store.ledger(account, limit=10_000)
            reconcile(bal, entries)
            assert bal == 1_000_000 - PRICE, (
                f"billed for {(1_000_000 - PRICE - bal) // PRICE} refused requests"
            )
            net = Counter()
            for e in entries:
                net[e.kind] += 1
            assert net["debit"] - net["refund"] == 1
