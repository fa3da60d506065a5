"""batch-settlement vouchers through the gateway on Redis vs a session holder, same run.

Run:  .venv/bin/python tests/bench/bench_vouchers.py [--seconds 5]

A popgate process on a real redis-server charges $0.01 on ``/paid/*`` and
offers batch-settlement; the facilitator stand-in runs as its own process.
``CHANNELS`` agents each deposit once (the official SDK client's deposit
payload), then wrk replays pre-signed cumulative vouchers round-robin over the
channels (a channel's next voucher is sent ``CHANNELS`` requests after its
previous one: with 32 connections it has long been answered). Also printed:
the claim cost per 1,000 requests (claim transactions and facilitator calls,
measured by a claim round after the run).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from coincurve import PrivateKey

from popgate.verifiers.session import SessionCodec
from popgate.verifiers.x402_channel import voucher_digest
from tests.bench.harness import PY, free_port, start, table, tree, wrk
from tests.support.batch import Payer
from tests.support.servers import redis_server, write_config

CHANNELS = 256
PER_CHANNEL = 120
PRICE = 10_000
LUA = """
local lines, n, i = {}, 0, 0
init = function(args) for l in io.lines(args[1]) do n = n + 1; lines[n] = l end end
request = function()
  i = i + 1
  if i > n then i = n end
  return wrk.format("GET", nil, {["PAYMENT-SIGNATURE"] = lines[i]})
end
"""


def fetch_offer(url: str) -> dict:
    try:
        urllib.request.urlopen(url)
    except urllib.error.HTTPError as e:
        required = json.loads(base64.b64decode(e.headers["PAYMENT-REQUIRED"]))
        return next(a for a in required["accepts"] if a["scheme"] == "batch-settlement")
    raise SystemExit("expected a 402")


def paid(url: str, header: str) -> None:
    req = urllib.request.Request(url, headers={"PAYMENT-SIGNATURE": header})
    with urllib.request.urlopen(req) as r:
        assert r.status == 200


def encode(offer: dict, payload: dict) -> str:
    body = {"x402Version": 2, "payload": payload, "accepted": offer, "resource": {"url": "/paid/x"}}
    return base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()


def voucher_header(offer: dict, payer: Payer, cfg: dict, cid: bytes, amount: int) -> str:
    """PAYMENT-SIGNATURE of ``payer``'s cumulative voucher for ``amount`` on channel ``cid``
    (signed with coincurve directly: many thousands are made before a run)."""
    chain_id = int(offer["network"].split(":")[1])
    sig = PrivateKey(payer.account.key).sign_recoverable(voucher_digest(cid, amount, chain_id), None)
    voucher = {
        "channelId": "0x" + cid.hex(),
        "maxClaimableAmount": str(amount),
        "signature": "0x" + sig[:64].hex() + bytes([sig[64] + 27]).hex(),
    }
    return encode(offer, {"type": "voucher", "channelConfig": cfg, "voucher": voucher})


def prepare(url: str, path: Path) -> None:
    """Deposit on every channel (SDK payloads), then write the voucher file."""
    from popgate.verifiers.x402 import Requirements

    offer = fetch_offer(url)
    req = Requirements.from_json(offer)
    payers = [Payer(0x100 + i) for i in range(CHANNELS)]
    seeds = []
    for p in payers:
        dep = p.sdk_payload(req)
        paid(url, encode(offer, dep))
        seeds.append((p, dep["channelConfig"], bytes.fromhex(dep["voucher"]["channelId"][2:])))
    lines = [
        voucher_header(offer, p, cfg, cid, k * PRICE)
        for k in range(2, PER_CHANNEL + 2)
        for p, cfg, cid in seeds
    ]
    # wrk (4.1) calls the script's request() once on its first thread before the run, to check
    # it: that call takes the first line, which is therefore a copy of the first voucher (or
    # the first channel's vouchers would all arrive one ahead of its charged total).
    path.write_text("".join(line + "\n" for line in [lines[0], *lines]))


def main(seconds: int = 5) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="pg-bench-vouchers-"))
    procs: list[subprocess.Popen[bytes]] = []
    with redis_server() as (store, _):
        try:
            up, fac, gw, admin = free_port(), free_port(), free_port(), free_port()
            procs.append(start([PY, "-m", "popgate.gateway.cli.demo_upstream", f"127.0.0.1:{up}"], up))
            procs.append(start([PY, "-m", "tests.support.facilitator", str(fac)], fac))
            extra = (
                '[x402]\nnetworks = ["eip155:84532"]\n'
                'pay_to = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"\n'
                f'facilitator = "http://127.0.0.1:{fac}"\n[x402.batch]\n'
                'receiver_authorizer = "0x5CbDd86a2FA8Dc4bDdd8a8f69dBa48572EeC07FB"\n'
                'min_deposit = "100.00"\nclaim_interval = 3600\n'
            )
            cfg = write_config(
                tmp, f"http://127.0.0.1:{up}", store=store, listen=gw, admin=admin, extra=extra
            )
            procs.append(start([PY, "-m", "tests.support.paid_gateway", str(cfg), str(PRICE)], gw))
            url = f"http://127.0.0.1:{gw}"
            t0 = time.perf_counter()
            prepare(f"{url}/paid/x", tmp / "vouchers.txt")
            print(f"prepared {CHANNELS} channels x {PER_CHANNEL} vouchers in {time.perf_counter() - t0:.1f}s")
            (tmp / "v.lua").write_text(LUA)
            key = (tmp / "k1").read_bytes().strip()
            token = SessionCodec({"k1": key}, "k1").issue(
                klass="human", subject="b", now=time.time(), ttl=3600
            )
            pids = tree(procs[2].pid)
            budget = min(seconds, int(CHANNELS * PER_CHANNEL / 4000) or 1)
            results = [
                wrk(
                    "session holder (free route)",
                    f"{url}/free",
                    pids,
                    seconds=budget,
                    conns=32,
                    headers={"Authorization": f"PoP {token}"},
                ),
                wrk_script(
                    "voucher agent (batch-settlement)",
                    f"{url}/paid/x",
                    pids,
                    budget,
                    tmp / "v.lua",
                    tmp / "vouchers.txt",
                ),
            ]
            print(f"\nthrough the gateway (store redis, {budget}s each, 32 connections):")
            print(table(results, "session holder (free route)"))
            claim_cost(admin, fac, results[1])
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
            refused = [
                m
                for m in metrics.splitlines()
                if m.startswith("popgate_payments_total") and "x402-batch" in m
            ]
            print("refused vouchers by reason:", ", ".join(refused) or "none")
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)


def wrk_script(name: str, url: str, pids: list[int], seconds: int, script: Path, data: Path):  # type: ignore[no-untyped-def]
    import tests.bench.harness as h

    orig = h.subprocess.run

    def run(args, **kw):  # type: ignore[no-untyped-def]
        return orig([*args[:-1], "-s", str(script), args[-1], "--", str(data)], **kw)

    h.subprocess.run = run
    try:
        return wrk(name, url, pids, seconds=seconds, conns=32, headers={})
    finally:
        h.subprocess.run = orig


def claim_cost(admin: int, fac: int, vouchers) -> None:  # type: ignore[no-untyped-def]
    view = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{admin}/x402/channels").read())
    channels = [c for c in view["channels"] if int(c["charged"]) > int(c["claimed"])]
    requests = sum(int(c["charged"]) // PRICE for c in view["channels"])
    # one claim transaction per due channel per round (the stand-in's claimWithSignature
    # batches are one entry each); per 1,000 requests:
    print(
        f"\nclaims: {len(channels)} channels hold {requests} paid requests -> "
        f"{1000 * len(channels) / max(requests, 1):.1f} claim entries per 1,000 requests "
        f"(one batched claimWithSignature of up to 100 entries: "
        f"{1000 * -(-len(channels) // 100) / max(requests, 1):.2f} transactions per 1,000 requests; "
        f"vs 1,000 settlements for x402 exact)"
    )


if __name__ == "__main__":
    main(int(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 5)
