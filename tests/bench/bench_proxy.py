"""Proxy throughput: popgate against a bare aiohttp proxy, side by side.

Starts on loopback a static origin (nginx, or the aiohttp demo upstream when
nginx is missing), the bare aiohttp proxy (tests/bench/bare_proxy.py),
nginx proxy_pass as the industry reference, and popgate; drives each with
wrk from a separate process; prints req/s, p50/p99, CPU µs per request of
the proxy process, and ratios. Rounds alternate so drift hits every case.

    python tests/bench/bench_proxy.py [--seconds 8] [--rounds 2] [--conns 32] [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.harness import PY, Result, free_port, nginx, start, table, tree, wrk


def session_token(keyfile: str) -> str:
    from popgate.verifiers.session import SessionCodec

    key = Path(keyfile).read_bytes().strip()
    return SessionCodec({"k1": key}, "k1").issue(klass="human", subject="bench", now=time.time(), ttl=3600)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--store", default="memory://")
    ap.add_argument(
        "--policy",
        help="policy file (e.g. policies/default.toml): benchmark with the "
        "policy engine and puzzles wired in",
    )
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pg-bench-")
    keyfile = os.path.join(tmp, "k1")
    Path(keyfile).write_bytes(os.urandom(32).hex().encode())
    procs = []
    try:
        up = free_port()
        if shutil.which("nginx"):
            p, _ = nginx(up, body="hello from the origin")
        else:
            p = start([PY, "-m", "popgate.gateway.cli.demo_upstream", f"127.0.0.1:{up}"], up)
        procs.append(p)
        origin = f"http://127.0.0.1:{up}"
        bare = free_port()
        procs.append(start([PY, "tests/bench/bare_proxy.py", str(bare), origin], bare))
        ref = None
        if shutil.which("nginx"):
            ref = free_port()
            procs.append(nginx(ref, upstream=up)[0])
        gw, admin = free_port(), free_port()
        store = args.store if args.store != "sqlite" else f"sqlite:///{tmp}/store.db"
        Path(tmp, "popgate.toml").write_text(
            f"""
[server]
listen = "127.0.0.1:{gw}"
admin = "127.0.0.1:{admin}"
upstream = "{origin}"
[store]
url = "{store}"
[sessions]
keys = [{{kid = "k1", secret_file = "{keyfile}"}}]
[puzzle]
keys = [{{kid = "p1", secret_file = "{keyfile}"}}]
"""
            + (f'[policy]\nfile = "{Path(args.policy).resolve()}"\n[credits]\n' if args.policy else "")
        )
        gwp = start(
            [
                PY,
                "-m",
                "popgate.gateway",
                "run",
                "--config",
                f"{tmp}/popgate.toml",
                "--log-level",
                "WARNING",
                "--workers",
                str(args.workers),
            ],
            gw,
        )
        procs.append(gwp)
        token = session_token(keyfile)
        cases = [("direct", up, procs[0].pid, {}), ("bare-aiohttp", bare, procs[1].pid, {})]
        if ref:
            cases.append(("nginx-proxy", ref, procs[2].pid, {}))
        cases += [
            ("popgate-session", gw, gwp.pid, {"Authorization": f"PoP {token}"}),
            ("popgate-402", gw, gwp.pid, {}),
        ]
        runs: dict[str, list[Result]] = {c[0]: [] for c in cases}
        for _ in range(args.rounds):
            for name, port, pid, headers in cases:
                runs[name].append(
                    wrk(
                        name,
                        f"http://127.0.0.1:{port}/bench",
                        tree(pid),
                        seconds=args.seconds,
                        conns=args.conns,
                        headers=headers,
                    )
                )
        best = [max(rs, key=lambda r: r.rps) for rs in runs.values()]
        print(
            f"\nproxy benchmark: {args.rounds} rounds × {args.seconds}s, {args.conns} connections, "
            f"popgate workers={args.workers}, store={args.store}, "
            f"policy={args.policy or '[policy] defaults'}; "
            "best round per case\n"
        )
        print(table(best, "bare-aiohttp", "nginx-proxy" if ref else None))
        b = {r.name: r for r in best}
        print(
            f"\npopgate-session / bare-aiohttp = {b['popgate-session'].rps / b['bare-aiohttp'].rps:.2f}"
            f"   popgate-session / direct = {b['popgate-session'].rps / b['direct'].rps:.2f}"
            f"   popgate-402 / bare-aiohttp = {b['popgate-402'].rps / b['bare-aiohttp'].rps:.2f}"
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
