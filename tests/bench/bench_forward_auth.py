"""Forward-auth cost: nginx alone vs nginx + popgate (auth mode) vs popgate inline.

Starts on loopback a static origin (nginx), nginx proxy_pass as the reference,
nginx running the shipped deploy/nginx/popgate-auth.conf in front of popgate
with ``mode = "auth"``, and popgate inline; one worker each. wrk drives every
case from a separate process; CPU µs per request is summed over every proxy
process involved (nginx master + worker, popgate). Rounds alternate.

    python tests/bench/bench_forward_auth.py [--seconds 5] [--rounds 2] [--conns 32]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.bench_proxy import session_token
from tests.bench.harness import PY, Result, free_port, nginx, start, table, tree, wrk
from tests.support.edges import nginx as nginx_edge


def popgate(tmp: str, name: str, keyfile: str, server: str) -> tuple[int, list[str]]:
    port, admin = free_port(), free_port()
    Path(tmp, f"{name}.toml").write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
admin = "127.0.0.1:{admin}"
{server}
[store]
url = "memory://"
[sessions]
keys = [{{kid = "k1", secret_file = "{keyfile}"}}]
[puzzle]
keys = [{{kid = "p1", secret_file = "{keyfile}"}}]
"""
    )
    cmd = [PY, "-m", "popgate.gateway", "run", "--config", f"{tmp}/{name}.toml", "--log-level", "WARNING"]
    return port, cmd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--conns", type=int, default=32)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pg-fa-bench-")
    keyfile = os.path.join(tmp, "k1")
    Path(keyfile).write_bytes(os.urandom(32).hex().encode())
    procs = []
    try:
        up = free_port()
        procs.append(nginx(up, body="hello from the origin")[0])
        ref = free_port()
        ref_proc = nginx(ref, upstream=up)[0]
        procs.append(ref_proc)
        inline_port, cmd = popgate(tmp, "inline", keyfile, f'upstream = "http://127.0.0.1:{up}"')
        inline = start(cmd, inline_port)
        procs.append(inline)
        auth_port, cmd = popgate(tmp, "auth", keyfile, 'mode = "auth"\ntrusted_proxies = ["127.0.0.1/32"]')
        auth = start(cmd, auth_port)
        procs.append(auth)
        edge = free_port()
        with nginx_edge(Path(tmp), edge, auth_port, up) as edge_proc:
            session = {"Authorization": f"PoP {session_token(keyfile)}"}
            fa = [*tree(edge_proc.pid), *tree(auth.pid)]
            cases = [
                ("nginx-proxy", ref, tree(ref_proc.pid), {}),
                ("nginx+popgate-auth session", edge, fa, session),
                ("popgate-inline session", inline_port, tree(inline.pid), session),
                ("  popgate's share", edge, tree(auth.pid), session),
                ("nginx+popgate-auth 402", edge, fa, {}),
                ("popgate-inline 402", inline_port, tree(inline.pid), {}),
            ]
            runs: dict[str, list[Result]] = {c[0]: [] for c in cases}
            for _ in range(args.rounds):
                for name, port, pids, headers in cases:
                    url = f"http://127.0.0.1:{port}/bench"
                    runs[name].append(
                        wrk(name, url, pids, seconds=args.seconds, conns=args.conns, headers=headers)
                    )
        best = [max(rs, key=lambda r: r.rps) for rs in runs.values()]
        print(
            f"\nforward-auth benchmark: {args.rounds} rounds × {args.seconds}s, {args.conns} connections, "
            "one worker each, verdict cache off; CPU µs/req summed over nginx and popgate; best round\n"
        )
        print(table(best, "nginx-proxy"))
        b = {r.name: r for r in best}
        per_core = b["nginx-proxy"].cpu_us / b["nginx+popgate-auth session"].cpu_us
        flood = b["popgate-inline 402"].cpu_us / b["nginx+popgate-auth 402"].cpu_us
        print(
            f"\nper core: nginx+popgate-auth session = {per_core:.2f}× nginx alone;"
            f" popgate-inline session = {b['nginx-proxy'].cpu_us / b['popgate-inline session'].cpu_us:.2f}×;"
            f" 402 through nginx+popgate = {flood:.2f}×"
            " popgate inline's 402 cost"
        )
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
