"""The 402 path alone, before/after in one run: reused within a window vs minted per request.

    python tests/bench/bench_402.py [--seconds 5] [--conns 32] [--rounds 7] [--base REV]

Two 1-worker popgate processes (the shipped policy, puzzles on, SQLite store, lag shedding
off): ``[overload] challenge_window`` at its default (402s reused) and at 0 (each 402 minted
and rendered per request, the "before"). wrk drives them in turns, round after round, and
each round's CPU µs per request of the two gives one paired ratio; the report is the median
ratio with its range (the machine's noise hits both cases of a round alike).

``--base REV`` adds a third process: popgate as it was at git revision REV (``git archive``
into a temporary directory, first on ``PYTHONPATH``) minting per request, so the reused 402
is also compared with *that* code's 402, in the same rounds (speed-ups shared by both paths
make the same-code ratio understate the gain over an older revision).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench.bench_all import MINTED, NO_LAG_SHED, popgate  # noqa: E402
from tests.bench.harness import nginx, revision_env, tree, wrk  # noqa: E402
from tests.support.servers import free_port  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--policy", default=str(ROOT / "policies/default.toml"))
    ap.add_argument("--base", default="", help="also a popgate at this git revision, minting per request")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pg-bench402-"))
    (tmp / "k1").write_bytes(os.urandom(32).hex().encode())
    up = free_port()
    origin_proc, _ = nginx(up, body="hello from the origin")
    policy = Path(args.policy).resolve()
    origin = f"http://127.0.0.1:{up}"
    reused, rport = popgate(tmp, origin, 1, policy, NO_LAG_SHED, "reused")
    minted, mport = popgate(tmp, origin, 1, policy, MINTED, "minted")
    cases = [("reused", rport, reused), ("minted", mport, minted)]
    if args.base:
        env = revision_env(args.base, tmp)
        base, bport = popgate(tmp, origin, 1, policy, MINTED, "base", env)
        cases.append(("base", bport, base))
    rows: dict[str, list[tuple[float, float]]] = {name: [] for name, _, _ in cases}
    try:
        for rnd in range(args.rounds):
            order = cases if rnd % 2 == 0 else cases[::-1]
            for name, port, proc in order:
                r = wrk(
                    name,
                    f"http://127.0.0.1:{port}/api/items",
                    tree(proc.pid),
                    seconds=args.seconds,
                    conns=args.conns,
                    headers={},
                )
                rows[name].append((r.cpu_us, r.rps))
                print(
                    f"  [{rnd + 1}/{args.rounds}] {name:7s} {r.rps:>8,.0f} req/s  {r.cpu_us:6.1f} µs/req  "
                    f"non-2xx {r.non2xx}",
                    flush=True,
                )
    finally:
        for _name, _port, p in cases:
            p.terminate()
        origin_proc.terminate()
    ratios = [a[0] / b[0] for a, b in zip(rows["reused"], rows["minted"], strict=True)]
    for name, vals in rows.items():
        us = [v[0] for v in vals]
        rps = [v[1] for v in vals]
        print(
            f"{name}: CPU µs/req median {statistics.median(us):.1f} [{min(us):.1f}–{max(us):.1f}], "
            f"req/s median {statistics.median(rps):,.0f} [{min(rps):,.0f}–{max(rps):,.0f}]"
        )
    print(
        f"ratio reused/minted (paired per round): median {statistics.median(ratios):.2f} "
        f"[{min(ratios):.2f}–{max(ratios):.2f}]  goal ≤ 0.6"
    )
    if args.base:
        vs = [a[0] / b[0] for a, b in zip(rows["reused"], rows["base"], strict=True)]
        print(
            f"ratio reused/minted at {args.base} (paired per round): median {statistics.median(vs):.2f} "
            f"[{min(vs):.2f}–{max(vs):.2f}]  goal ≤ 0.6"
        )


if __name__ == "__main__":
    main()
