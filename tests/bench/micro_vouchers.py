"""In-process CPU cost of a batch-settlement voucher, piece by piece.

Run:  .venv/bin/python tests/bench/micro_vouchers.py [--profile]

A gateway is built in this process (the paid-route policy of
``tests.support.paid_gateway``) on a real redis-server, with the facilitator
stand-in for the deposits. Pre-signed cumulative vouchers (distinct channels,
sent ``CONCURRENCY`` at a time so the group commit batches them as under
load) go through ``Gateway.serve`` on aiohttp's test request (no socket: the
pipeline, the store round trip and the response headers; the origin is not
asked — the 402 of a free route ``/free`` through the same ``serve`` is the
comparison). Each figure is the best of several rounds of
``time.thread_time()`` (this thread's CPU: Redis and the facilitator run
elsewhere) per request. The pieces (header decode, parse, digest, ecrecover,
the Redis charge, PAYMENT-RESPONSE, the fee tally) are timed alone.
``--profile`` prints a cProfile of the voucher rounds.
"""

from __future__ import annotations

import asyncio
import base64
import cProfile
import gc
import ipaddress
import json
import pstats
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiohttp.test_utils import make_mocked_request
from coincurve import PrivateKey

from popgate.gateway.app import build_app
from popgate.gateway.extensions import default_extensions
from popgate.gateway.ops.config import load_config
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.payments.batch import payment_response
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import Allow
from popgate.gateway.stores import open_store
from popgate.verifiers.evm import recover_address
from popgate.verifiers.session import SessionCodec
from popgate.verifiers.x402 import (
    Requirements,
    encode_payment_response,
    parse_payment_signature,
)
from popgate.verifiers.x402_batch import verify_batch
from popgate.verifiers.x402_channel import parse_payload, voucher_digest
from tests.bench.harness import PY, free_port, start
from tests.support.batch import Payer
from tests.support.facilitator import running
from tests.support.paid_gateway import ChargePolicy
from tests.support.servers import redis_server, write_config

PRICE = 10_000
CHANNELS = 64
CONCURRENCY = 32
ROUNDS = 7
EXTRA = """[x402]
networks = ["eip155:84532"]
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
facilitator = "{fac}"
[x402.batch]
receiver_authorizer = "0x5CbDd86a2FA8Dc4bDdd8a8f69dBa48572EeC07FB"
min_deposit = "100.00"
claim_interval = 3600
"""


def encode(offer: dict[str, Any], payload: dict[str, Any]) -> str:
    body = {"x402Version": 2, "payload": payload, "accepted": offer, "resource": {"url": "/paid/x"}}
    return base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()


PEER = ipaddress.IPv4Address("127.0.0.1")


def decision_headers(ctx: Context) -> None:
    """What the forwarder adds of the pipeline's: the response headers (a
    dict standing in for the origin's answer)."""
    out: dict[str, str] = {}
    for k, v in ctx.response_headers:
        out[k] = v


def request(path: str, headers: dict[str, str]) -> Any:
    return make_mocked_request("GET", path, headers={"Host": "bench", **headers})


class Vouchers:
    """Deposits on ``CHANNELS`` channels, then signs their next vouchers."""

    def __init__(self, offer: dict[str, Any]) -> None:
        self.offer, self.req = offer, Requirements.from_json(offer)
        self.chain_id = int(offer["network"].split(":")[1])
        self.payers = [Payer(0x200 + i) for i in range(CHANNELS)]
        self.seeds: list[tuple[Payer, dict[str, Any], bytes]] = []
        self.next = 2

    def deposits(self) -> list[str]:
        out = []
        for p in self.payers:
            dep = p.sdk_payload(self.req)
            self.seeds.append((p, dep["channelConfig"], bytes.fromhex(dep["voucher"]["channelId"][2:])))
            out.append(encode(self.offer, dep))
        return out

    def round(self) -> list[str]:
        """One voucher per channel, cumulative ``next`` × the price."""
        k, self.next = self.next, self.next + 1
        out = []
        for p, cfg, cid in self.seeds:
            sig = PrivateKey(p.account.key).sign_recoverable(
                voucher_digest(cid, k * PRICE, self.chain_id), None
            )
            voucher = {
                "channelId": "0x" + cid.hex(),
                "maxClaimableAmount": str(k * PRICE),
                "signature": "0x" + sig[:64].hex() + bytes([sig[64] + 27]).hex(),
            }
            out.append(encode(self.offer, {"type": "voucher", "channelConfig": cfg, "voucher": voucher}))
        return out


GC = {"t0": 0.0, "spent": 0.0, "runs": 0}


def _gc_clock(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        GC["t0"] = time.thread_time()
    else:
        GC["spent"] += time.thread_time() - GC["t0"]
        GC["runs"] += 1


async def timed(requests: list[Any], one: Callable[[Any], Awaitable[Any]]) -> float:
    """CPU µs per call of ``one`` over ``requests`` (made beforehand: aiohttp's
    test requests are slow to make), ``CONCURRENCY`` at a time."""
    t0 = time.thread_time()
    for i in range(0, len(requests), CONCURRENCY):
        await asyncio.gather(*(one(r) for r in requests[i : i + CONCURRENCY]))
    return (time.thread_time() - t0) / len(requests) * 1e6


def alone(fn: Callable[[], Any], n: int = 2000) -> float:
    """Best-of-5 CPU µs per call of a synchronous piece."""
    best = float("inf")
    for _ in range(5):
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        best = min(best, (time.thread_time() - t0) / n * 1e6)
    return best


async def amain(profile: bool) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="pg-micro-vouchers-"))
    up = free_port()
    origin = start([PY, "-m", "popgate.gateway.cli.demo_upstream", f"127.0.0.1:{up}"], up)
    with redis_server() as (store_url, _):
        async with running() as (fac, _state):
            cfg = write_config(tmp, f"http://127.0.0.1:{up}", store=store_url, extra=EXTRA.format(fac=fac))
            config = load_config(str(cfg))
            store = open_store(config.store.url, timeout=5.0)
            gw = build_app(config, store=store, metrics=Metrics(), extensions=default_extensions())
            gw.policy.policy = ChargePolicy(PRICE)
            try:
                await run(gw, tmp, profile)
            finally:
                await gw.close()
                await store.close()
                origin.terminate()
                origin.wait(10)


async def run(gw: Any, tmp: Path, profile: bool) -> None:
    first = await gw.serve(request("/paid/x", {}))
    required = json.loads(base64.b64decode(first.headers["PAYMENT-REQUIRED"]))
    key = (tmp / "k1").read_bytes().strip()
    token = SessionCodec({"k1": key}, "k1").issue(klass="human", subject="b", now=time.time(), ttl=3600)
    offer = next(a for a in required["accepts"] if a["scheme"] == "batch-settlement")
    vs = Vouchers(offer)
    statuses: dict[int, int] = {}

    def paid(headers: list[str]) -> list[Any]:
        return [request("/paid/x", {"PAYMENT-SIGNATURE": h}) for h in headers]

    async def serve(r: Any) -> None:
        ctx = Context(r, time.time(), PEER)
        verdict = await gw.pipeline.run(ctx)
        status = 200 if isinstance(verdict, Allow) else 402
        if status == 200:
            decision_headers(ctx)
        statuses[status] = statuses.get(status, 0) + 1

    for r in paid(vs.deposits()):
        await serve(r)
    assert statuses == {402: 0} or set(statuses) == {200}, statuses
    rounds = [paid(vs.round()) for _ in range(ROUNDS + 1)]
    await timed(rounds[0], serve)  # warm caches (the gateway's channel copies)
    prof = cProfile.Profile() if profile else None
    best = float("inf")
    gc.callbacks.append(_gc_clock)
    for r in rounds[1:]:
        if prof is not None:
            prof.enable()
        best = min(best, await timed(r, serve))
        if prof is not None:
            prof.disable()
    if "--cycles" in sys.argv:  # what the voucher path leaves to the garbage collector
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        await timed(paid(vs.round()), serve)
        gc.collect()
        gc.set_debug(0)
        kinds: dict[str, int] = {}
        for o in gc.garbage:
            kinds[type(o).__name__] = kinds.get(type(o).__name__, 0) + 1
        print(f"cycles left by {CHANNELS} vouchers:", sorted(kinds.items(), key=lambda kv: -kv[1])[:25])
        errors = {str(o)[:80] for o in gc.garbage if isinstance(o, BaseException)}
        print("exceptions in them:", errors)
        gc.garbage.clear()
    gc.callbacks.remove(_gc_clock)
    gc_us = GC["spent"] / (ROUNDS * CHANNELS) * 1e6
    assert set(statuses) == {200}, statuses

    async def free_carrier(r: Any) -> None:
        ctx = Context(r, time.time(), PEER)
        assert isinstance(await gw.pipeline.run(ctx), Allow)
        decision_headers(ctx)

    async def free(r: Any) -> None:
        ctx = Context(r, time.time(), PEER)
        assert isinstance(await gw.pipeline.run(ctx), Allow) and ctx.klass == "human", ctx.klass
        decision_headers(ctx)

    holders = [request("/free", {"Authorization": f"PoP {token}"}) for _ in range(CHANNELS)]
    free_best = min([await timed(holders, free) for _ in range(ROUNDS)])
    carriers = [request("/free", {"PAYMENT-SIGNATURE": r.headers["PAYMENT-SIGNATURE"]}) for r in rounds[0]]
    carry_best = min([await timed(carriers, free_carrier) for _ in range(ROUNDS)])

    # the pieces, alone
    rail = next(e.x402 for e in gw.enforcers if hasattr(e, "x402"))
    batch = await rail.batch()
    offers = rail.offers(PRICE)
    rounds2 = [[parse_payment_signature(h) for h in vs.round()] for _ in range(ROUNDS)]

    async def pay(payment: Any) -> None:
        await batch.pay(payment, offers, time.time())

    if "--profile-pay" in sys.argv:
        prof = cProfile.Profile()
        prof.enable()
    charge_best = min([await timed(r, pay) for r in rounds2])
    if "--profile-pay" in sys.argv and prof is not None:
        prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_callees("charge|_round_trip|_drain")
    store = gw.services.store

    async def tally(_: Any) -> None:
        fut = store.incr_soon("bench-tally", 1, 60.0)
        await fut

    tally_best = min([await timed(list(range(CHANNELS)), tally) for _ in range(ROUNDS)])
    header = vs.round()[0]
    payment = parse_payment_signature(header)
    p = parse_payload(payment.payload)
    req = Requirements.from_json(offer)
    digest = voucher_digest(p.voucher.channel_id, p.voucher.max_claimable, 84532)
    from popgate.verifiers.x402_batch import ChainView

    view = ChainView(10**12)
    d = verify_batch(payment, [req], p.voucher.max_claimable - PRICE, view, time.time(), parsed=p)
    print(f"through Gateway.pipeline, {CONCURRENCY} at a time (CPU µs/request, best of {ROUNDS}):")
    print(f"  voucher (/paid/x, charged on Redis)   {best:7.1f}")
    print(f"    of which the garbage collector        {gc_us:7.1f}  ({GC['runs']} runs)")
    print(f"  session holder (/free, PoP session)   {free_best:7.1f}")
    print(f"  voucher header on /free (decoded, not charged) {carry_best:7.1f}")
    print(f"  BatchRail.pay alone (parsed payment; verify + Redis CAS)   {charge_best:6.1f}")
    print(f"  fee tally alone (store.incr_soon, group-committed)        {tally_best:6.1f}")
    print("pieces alone (CPU µs/call):")
    rows = [
        ("decode PAYMENT-SIGNATURE (base64+JSON+Requirements)", lambda: parse_payment_signature(header)),
        ("parse_payload (cached config)", lambda: parse_payload(payment.payload)),
        ("voucher_digest (EIP-712, 2 keccak)", lambda: voucher_digest(p.voucher.channel_id, 10**6, 84532)),
        ("recover_address (coincurve + keccak)", lambda: recover_address(digest, p.voucher.signature)),
        (
            "verify_batch (parsed; digest + recover incl.)",
            lambda: verify_batch(
                payment, [req], p.voucher.max_claimable - PRICE, view, time.time(), parsed=p
            ),
        ),
    ]
    for name, fn in rows:
        print(f"  {name:52s} {alone(fn):6.1f}")
    from popgate.gateway.payments.channels import Reservation
    from popgate.gateway.payments.vouchers import Begun

    begun = Begun(d, Reservation(p.channel_id, "", {}), view, False)
    print(
        f"  {'PAYMENT-RESPONSE (payment_response + encode)':52s} "
        f"{alone(lambda: encode_payment_response(payment_response(begun))):6.1f}"
    )
    if prof is not None:
        stats = pstats.Stats(prof)
        stats.sort_stats("tottime").print_stats(35)
        stats.sort_stats("cumulative").print_stats(50)


if __name__ == "__main__":
    asyncio.run(amain("--profile" in sys.argv))  # or --profile-pay: BatchRail.pay alone
