"""In-process CPU cost of a batch-settlement voucher, whole and piece by piece.

Run:  .venv/bin/python tests/bench/micro_vouchers.py [--profile] [--cycles]

A gateway is built in this process (the ``/paid/*`` price policy of
``tests.support.paid_gateway``) on a real redis-server, with the facilitator
stand-in for the deposits. Pre-signed cumulative vouchers on ``CHANNELS``
channels go through the gateway's pipeline ``CONCURRENCY`` at a time (so the
group commit batches them as under load): decode, verify, the one Redis round
trip, PAYMENT-RESPONSE. The origin is not asked and aiohttp's own parsing and
writing are not run (``bench_vouchers.py`` measures those, through a socket).
The same pipeline on ``/free`` for a session holder, and for a request that
carries a voucher header but is not charged, are the comparisons.

Every figure is CPU µs per request of this thread (``time.thread_time()``:
Redis and the facilitator run elsewhere), the best of ``ROUNDS`` rounds; the
pieces (header decode, payload parse, EIP-712 digest, ecrecover, the whole
check, the Redis charge, the fee tally, PAYMENT-RESPONSE) are timed alone.
``--profile``: a cProfile of the voucher rounds; ``--cycles``: what one round
leaves to the garbage collector.
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

from popgate.gateway.app import build_app
from popgate.gateway.extensions import default_extensions
from popgate.gateway.http import server
from popgate.gateway.ops.config import load_config
from popgate.gateway.ops.metrics import Metrics
from popgate.gateway.payments import batch as batch_module
from popgate.gateway.payments.channels import Reservation
from popgate.gateway.payments.vouchers import Begun
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import Allow
from popgate.gateway.stores import open_store
from popgate.verifiers.evm import recover_address
from popgate.verifiers.session import SessionCodec
from popgate.verifiers.x402 import Requirements, encode_payment_response, parse_payment_signature
from popgate.verifiers.x402_batch import ChainView, verify_batch
from popgate.verifiers.x402_channel import parse_payload, voucher_digest
from tests.bench.bench_vouchers import encode, voucher_header
from tests.bench.harness import PY, free_port, start
from tests.support.batch import Payer
from tests.support.facilitator import running
from tests.support.paid_gateway import ChargePolicy
from tests.support.servers import redis_server, write_config

PRICE = 10_000
CHANNELS = 64
CONCURRENCY = 32
ROUNDS = 7
PEER = ipaddress.IPv4Address("127.0.0.1")
EXTRA = """[x402]
networks = ["eip155:84532"]
pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
facilitator = "{fac}"
[x402.batch]
receiver_authorizer = "0x5CbDd86a2FA8Dc4bDdd8a8f69dBa48572EeC07FB"
min_deposit = "100.00"
claim_interval = 3600
"""


def request(path: str, headers: dict[str, str]) -> Any:
    """aiohttp's test request (slow to make: made before the timing)."""
    return make_mocked_request("GET", path, headers={"Host": "bench", **headers})


class Vouchers:
    """Deposits on ``CHANNELS`` channels, then each round the next voucher of every channel."""

    def __init__(self, offer: dict[str, Any]) -> None:
        self.offer = offer
        self.chain_id = int(offer["network"].split(":")[1])
        self.seeds: list[tuple[Payer, dict[str, Any], bytes]] = []
        self.next = 2

    def deposits(self) -> list[str]:
        out = []
        for i in range(CHANNELS):
            p = Payer(0x200 + i)
            dep = p.sdk_payload(Requirements.from_json(self.offer))
            self.seeds.append((p, dep["channelConfig"], bytes.fromhex(dep["voucher"]["channelId"][2:])))
            out.append(encode(self.offer, dep))
        return out

    def round(self) -> list[str]:
        k, self.next = self.next, self.next + 1
        out = []
        for p, cfg, cid in self.seeds:
            out.append(voucher_header(self.offer, p, cfg, cid, k * PRICE))
        return out


async def timed(items: list[Any], one: Callable[[Any], Awaitable[Any]]) -> float:
    """CPU µs per call of ``one`` over ``items``, ``CONCURRENCY`` at a time."""
    t0 = time.thread_time()
    for i in range(0, len(items), CONCURRENCY):
        await asyncio.gather(*(one(x) for x in items[i : i + CONCURRENCY]))
    return (time.thread_time() - t0) / len(items) * 1e6


def alone(fn: Callable[[], Any], n: int = 2000) -> float:
    """Best-of-5 CPU µs per call of a synchronous piece."""
    best = float("inf")
    for _ in range(5):
        t0 = time.thread_time()
        for _ in range(n):
            fn()
        best = min(best, (time.thread_time() - t0) / n * 1e6)
    return best


class GcClock:
    """CPU time the garbage collector spends while installed."""

    def __init__(self) -> None:
        self.spent, self.runs, self._t0 = 0.0, 0, 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.thread_time()
        else:
            self.spent += time.thread_time() - self._t0
            self.runs += 1


async def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="pg-micro-vouchers-"))
    up = free_port()
    origin = start([PY, "-m", "popgate.gateway.cli.demo_upstream", f"127.0.0.1:{up}"], up)
    try:
        with redis_server() as (store_url, _):
            async with running() as (fac, _state):
                cfg = write_config(
                    tmp, f"http://127.0.0.1:{up}", store=store_url, extra=EXTRA.format(fac=fac)
                )
                config = load_config(str(cfg))
                store = open_store(config.store.url, timeout=5.0)
                gw = build_app(config, store=store, metrics=Metrics(), extensions=default_extensions())
                gw.policy.policy = ChargePolicy(PRICE)
                tune = getattr(server, "tune_collector", None)  # as a serving process does (once written)
                if tune is not None:
                    tune()
                try:
                    await measure(gw, (tmp / "k1").read_bytes().strip())
                finally:
                    await gw.close()
                    await store.close()
    finally:
        origin.terminate()
        origin.wait(10)


async def measure(gw: Any, session_key: bytes) -> None:
    refused = await gw.serve(request("/paid/x", {}))
    required = json.loads(base64.b64decode(refused.headers["PAYMENT-REQUIRED"]))
    offer = next(a for a in required["accepts"] if a["scheme"] == "batch-settlement")
    vs = Vouchers(offer)

    async def through(r: Any) -> None:
        ctx = Context(r, time.time(), PEER)
        if not isinstance(await gw.pipeline.run(ctx), Allow):
            raise SystemExit(f"refused: {ctx.request.path}")
        dict(ctx.response_headers)  # what the forwarder adds to the answer

    def paid(headers: list[str]) -> list[Any]:
        return [request("/paid/x", {"PAYMENT-SIGNATURE": h}) for h in headers]

    for r in paid(vs.deposits()):
        await through(r)
    rounds = [paid(vs.round()) for _ in range(ROUNDS + 1)]
    await timed(rounds[0], through)  # warm: the gateway's copies of the channels
    prof = cProfile.Profile() if "--profile" in sys.argv else None
    clock = GcClock()
    gc.callbacks.append(clock)
    voucher = float("inf")
    for r in rounds[1:]:
        if prof is not None:
            prof.enable()
        voucher = min(voucher, await timed(r, through))
        if prof is not None:
            prof.disable()
    gc.callbacks.remove(clock)
    if "--cycles" in sys.argv:
        await cycles(paid(vs.round()), through)

    token = SessionCodec({"k1": session_key}, "k1").issue(
        klass="human", subject="b", now=time.time(), ttl=3600
    )
    holders = [request("/free", {"Authorization": f"PoP {token}"}) for _ in range(CHANNELS)]
    session = min([await timed(holders, through) for _ in range(ROUNDS)])
    carriers = [request("/free", {"PAYMENT-SIGNATURE": r.headers["PAYMENT-SIGNATURE"]}) for r in rounds[0]]
    carrier = min([await timed(carriers, through) for _ in range(ROUNDS)])

    rail = next(e.x402 for e in gw.enforcers if hasattr(e, "x402"))
    batch, offers = await rail.batch(), rail.offers(PRICE)
    payments = [[parse_payment_signature(h) for h in vs.round()] for _ in range(ROUNDS)]
    charge = min([await timed(r, lambda pay: batch.pay(pay, offers, time.time())) for r in payments])
    store = gw.services.store
    tally = min(
        [
            await timed(list(range(CHANNELS)), lambda _: store.incr("bench-tally", 1, 60.0))
            for _ in range(ROUNDS)
        ]
    )

    n = ROUNDS * CHANNELS
    print(f"through the pipeline, {CONCURRENCY} at a time (CPU µs/request, best of {ROUNDS} rounds):")
    print(f"  voucher on /paid/x (charged on Redis)          {voucher:6.1f}")
    print(
        f"    garbage collector during those rounds        {clock.spent / n * 1e6:6.1f}  ({clock.runs} runs)"
    )
    print(f"  session holder on /free                        {session:6.1f}")
    print(f"  voucher header on /free (decoded, not charged) {carrier:6.1f}")
    print(f"  BatchRail.pay (verify + the Redis charge)      {charge:6.1f}")
    print(f"  a group-committed script call (store.incr)     {tally:6.1f}")
    print("pieces alone (CPU µs/call):")
    header = rounds[0][0].headers["PAYMENT-SIGNATURE"]
    payment = parse_payment_signature(header)
    p = parse_payload(payment.payload)
    req = Requirements.from_json(offer)
    digest = voucher_digest(p.voucher.channel_id, p.voucher.max_claimable, vs.chain_id)
    view = ChainView(10**12)
    base = p.voucher.max_claimable - PRICE
    d = verify_batch(payment, [req], base, view, time.time(), parsed=p)
    begun = Begun(d, Reservation(p.channel_id, "", {}), view, False)
    fast_header = getattr(batch_module, "payment_response_header", None)  # absent before it was written
    rows: list[tuple[str, Callable[[], Any]]] = [
        ("decode PAYMENT-SIGNATURE (base64, JSON, offer)", lambda: parse_payment_signature(header)),
        ("parse_payload (config cached)", lambda: parse_payload(payment.payload)),
        ("voucher_digest (EIP-712: 2 keccak)", lambda: voucher_digest(p.voucher.channel_id, 10**6, 84532)),
        ("recover_address (libsecp256k1 + keccak)", lambda: recover_address(digest, p.voucher.signature)),
        (
            "verify_batch (all checks, digest, ecrecover)",
            lambda: verify_batch(payment, [req], base, view, 0, parsed=p),
        ),
        (
            "PAYMENT-RESPONSE",
            (lambda: fast_header(begun))
            if fast_header is not None
            else (lambda: encode_payment_response(batch_module.payment_response(begun))),
        ),
    ]
    for name, fn in rows:
        print(f"  {name:46s} {alone(fn):6.1f}")
    if prof is not None:
        pstats.Stats(prof).sort_stats("tottime").print_stats(30)


async def cycles(requests: list[Any], through: Callable[[Any], Awaitable[None]]) -> None:
    """Print what one round leaves in reference cycles (aiohttp's test requests'
    mocks are among them: they are not the gateway's)."""
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    await timed(requests, through)
    gc.collect()
    gc.set_debug(0)
    kinds: dict[str, int] = {}
    for o in gc.garbage:
        kinds[type(o).__name__] = kinds.get(type(o).__name__, 0) + 1
    print(f"left in cycles by {len(requests)} vouchers:", sorted(kinds.items(), key=lambda kv: -kv[1])[:20])
    gc.garbage.clear()


if __name__ == "__main__":
    asyncio.run(main())
