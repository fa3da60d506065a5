"""Offline x402 payment verification cost, with eth-account as the baseline
measured in the same run.

Run:  .venv/bin/python tests/bench/bench_payments.py [--n 3000] [--gateway] [--seconds 5]

Prints µs per operation (best of 5 rounds) for: header decode + parse,
EIP-712 digest (ours vs eth-account's generic encoder), secp256k1 recovery
(coincurve vs eth-account), and the whole ``ExactVerifier.verify`` with a
fresh nonce each time (MemoryStore claim included); then the credit debit
(``debit_ledger``: balance + append-only ledger, one atomic op) on memory,
SQLite and a real redis-server. With ``--gateway``: wrk through a popgate
process (Redis store when redis-server exists, else SQLite) on ``/paid/*``
(a Charge of $0.01) for a paying agent (Bearer API key: one atomic debit per
request) against a session-holding client on the same gateway (no store
round trip), in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from coincurve import PrivateKey
from eth_account import Account
from eth_account.messages import encode_typed_data

from popgate.gateway.stores.base import spend
from popgate.gateway.stores.memory import MemoryStore
from popgate.verifiers.eip712 import Domain, transfer_digest
from popgate.verifiers.evm import recover_address
from popgate.verifiers.x402 import (
    encode_header,
    exact_requirements,
    parse_payment_signature,
)
from popgate.verifiers.x402_exact import ExactVerifier

KEY = bytes.fromhex("11" * 32)
PAYER = Account.from_key(KEY).address
PAY_TO = "0x209693Bc6afc0C5328bA36FaF03C514EF312287C"
NOW = 1_790_000_000
REQ = exact_requirements("0.01", "eip155:84532", PAY_TO)
DOMAIN = Domain("USDC", "2", 84532, REQ.asset)


def make_header(nonce: bytes) -> str:
    frm, to = bytes.fromhex(PAYER[2:]), bytes.fromhex(PAY_TO[2:])
    digest = transfer_digest(DOMAIN, frm, to, 10000, 0, NOW + 300, nonce)
    sig = PrivateKey(KEY).sign_recoverable(digest, hasher=None)
    sig = sig[:64] + bytes([sig[64] + 27])
    return encode_header(
        {
            "x402Version": 2,
            "accepted": REQ.to_json(),
            "payload": {
                "authorization": {
                    "from": PAYER,
                    "to": PAY_TO,
                    "value": "10000",
                    "validAfter": "0",
                    "validBefore": str(NOW + 300),
                    "nonce": "0x" + nonce.hex(),
                },
                "signature": "0x" + sig.hex(),
            },
        }
    )


def typed(nonce: bytes) -> dict:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"},
                {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"},
                {"name": "nonce", "type": "bytes32"},
            ],
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {"name": "USDC", "version": "2", "chainId": 84532, "verifyingContract": REQ.asset},
        "message": {
            "from": PAYER,
            "to": PAY_TO,
            "value": 10000,
            "validAfter": 0,
            "validBefore": NOW + 300,
            "nonce": nonce,
        },
    }


def best(fn: Callable[[], None], n: int, rounds: int = 5) -> float:
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t) / n * 1e6)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--gateway", action="store_true")
    ap.add_argument("--seconds", type=int, default=5)
    n = ap.parse_args().n
    nonce = os.urandom(32)
    header = make_header(nonce)
    raw = json.loads(base64.b64decode(header))
    frm, to = bytes.fromhex(PAYER[2:]), bytes.fromhex(PAY_TO[2:])
    digest = transfer_digest(DOMAIN, frm, to, 10000, 0, NOW + 300, nonce)
    sig = bytes.fromhex(raw["payload"]["signature"][2:])
    msg = encode_typed_data(full_message=typed(nonce))

    rows = {
        "parse PAYMENT-SIGNATURE": best(lambda: parse_payment_signature(header), n),
        "EIP-712 digest (ours)": best(
            lambda: transfer_digest(DOMAIN, frm, to, 10000, 0, NOW + 300, nonce), n
        ),
        "EIP-712 digest (eth-account)": best(
            lambda: encode_typed_data(full_message=typed(nonce)), max(n // 10, 50)
        ),
        "recover (coincurve, low-s)": best(lambda: recover_address(digest, sig), n),
        "recover (eth-account)": best(lambda: Account.recover_message(msg, signature=sig), max(n // 10, 50)),
    }
    headers = [make_header(os.urandom(32)) for _ in range(n * 5)]
    it = iter(headers)
    verifier, store = ExactVerifier(), MemoryStore()
    loop = asyncio.new_event_loop()
    offers = [REQ]

    def verify() -> None:
        paid = loop.run_until_complete(verifier.verify(parse_payment_signature(next(it)), offers, NOW))
        loop.run_until_complete(spend(store, paid.spend))

    rows["full offline verify (parse+checks+digest+recover+claim)"] = best(verify, n)
    rows["  same, eth-account digest+recover (baseline)"] = (
        rows["parse PAYMENT-SIGNATURE"] + rows["EIP-712 digest (eth-account)"] + rows["recover (eth-account)"]
    )
    loop.close()
    width = max(map(len, rows))
    print(f"{'operation':<{width}}  µs/op")
    for k, v in rows.items():
        print(f"{k:<{width}}  {v:8.1f}")
    print(
        "digest speed-up vs eth-account:   "
        f"{rows['EIP-712 digest (eth-account)'] / rows['EIP-712 digest (ours)']:.1f}x"
    )
    print(
        "recovery speed-up vs eth-account: "
        f"{rows['recover (eth-account)'] / rows['recover (coincurve, low-s)']:.1f}x"
    )
    full = rows["full offline verify (parse+checks+digest+recover+claim)"]
    print(
        f"full verify: {full:.0f} µs ≈ {1e6 / full:.0f} verifications/s per core; "
        f"baseline/ours = {rows['  same, eth-account digest+recover (baseline)'] / full:.1f}x"
    )


async def debit_cost(n: int) -> dict[str, float]:
    """µs per debit_ledger on each backend (sequential: latency, not throughput)."""
    import shutil
    import tempfile

    from popgate.gateway.stores.sqlite import SQLiteStore
    from tests.support.servers import redis_server

    out: dict[str, float] = {}

    async def run(name: str, store) -> None:  # type: ignore[no-untyped-def]
        await store.credit_ledger("key:bench", 10**12, "topup", "", 0.0)
        t = time.perf_counter()
        for i in range(n):
            await store.debit_ledger("key:bench", 1, f"req:{i}", float(i))
        out[f"debit_ledger ({name})"] = (time.perf_counter() - t) / n * 1e6
        await store.close()

    await run("memory", MemoryStore())
    d = tempfile.mkdtemp(prefix="pg-bench-")
    await run("sqlite, synchronous=FULL", SQLiteStore(f"{d}/b.db"))
    if shutil.which("redis-server"):
        from popgate.gateway.stores.redis import RedisStore

        with redis_server() as (url, _):
            await run("redis, Lua", RedisStore(url))
    return out


def gateway_run(seconds: int) -> None:
    """wrk: paying agent (credits) vs session holder through one gateway."""
    import shutil
    import subprocess
    import tempfile
    import urllib.request

    from popgate.verifiers.session import SessionCodec
    from tests.bench.harness import PY, free_port, start, table, tree, wrk
    from tests.support.servers import redis_server, write_config

    tmp = Path(tempfile.mkdtemp(prefix="pg-bench-pay-"))
    (tmp / "admin").write_text("b" * 40)
    procs: list[subprocess.Popen[bytes]] = []
    with redis_server() if shutil.which("redis-server") else _nullctx(f"sqlite:///{tmp}/s.db") as r:
        store = r[0]
        try:
            up = free_port()
            procs.append(start([PY, "-m", "popgate.gateway.cli.demo_upstream", f"127.0.0.1:{up}"], up))
            gw, admin = free_port(), free_port()
            cfg = write_config(
                tmp,
                f"http://127.0.0.1:{up}",
                store=store,
                listen=gw,
                admin=admin,
                extra=f'[credits]\nadmin_token = {{ secret_file = "{tmp / "admin"}" }}\n',
            )
            procs.append(start([PY, "-m", "tests.support.paid_gateway", str(cfg), "10000"], gw))
            req = urllib.request.Request(
                f"http://127.0.0.1:{admin}/admin/credits/keys",
                method="POST",
                data=b'{"amount": 1000000000000}',
                headers={"Authorization": "Bearer " + "b" * 40, "Content-Type": "application/json"},
            )
            api_key = json.loads(urllib.request.urlopen(req).read())["api_key"]
            key = (tmp / "k1").read_bytes().strip()
            token = SessionCodec({"k1": key}, "k1").issue(
                klass="human", subject="bench", now=time.time(), ttl=3600
            )
            pids = tree(procs[1].pid)
            url = f"http://127.0.0.1:{gw}"
            results = [
                wrk(
                    "session holder (free route)",
                    f"{url}/free",
                    pids,
                    seconds=seconds,
                    conns=32,
                    headers={"Authorization": f"PoP {token}"},
                ),
                wrk(
                    "paying agent (credits, $0.01/req)",
                    f"{url}/paid/x",
                    pids,
                    seconds=seconds,
                    conns=32,
                    headers={"Authorization": f"Bearer {api_key}"},
                ),
            ]
            print(f"\nthrough the gateway (store {store.split(':')[0]}, {seconds}s each, 32 connections):")
            print(table(results, "session holder (free route)"))
        finally:
            for p in procs:
                p.terminate()
                p.wait(10)


class _nullctx:
    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> tuple[str, None]:
        return self.url, None

    def __exit__(self, *exc: object) -> None:
        return None


if __name__ == "__main__":
    main()
    n_debit = 2000
    for name, us in asyncio.run(debit_cost(n_debit)).items():
        print(f"{name:<40}  {us:8.1f} µs/op")
    if "--gateway" in sys.argv:
        secs = int(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 5
        gateway_run(secs)
