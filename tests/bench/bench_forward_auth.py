"""Forward-auth cost: nginx alone vs nginx + popgate (auth mode, verdict cache on and off)
vs popgate inline, for a session holder and for an unverified 402 flood.

Starts on loopback a static origin (nginx), nginx proxy_pass as the reference, two
nginx running the shipped deploy/forward-auth/nginx-popgate-auth.conf (verdict cache on;
cache off) in front of one popgate with ``mode = "auth"``, and popgate inline; one worker
each. wrk drives every case from a separate process; CPU µs per request is summed over
every process involved (nginx master + worker, popgate). Cases alternate within each round;
medians and ranges over the rounds.

    python tests/bench/bench_forward_auth.py [--seconds 5] [--rounds 5] [--conns 32] [--base REV]

``--base REV`` adds popgate as it was at git revision REV (``git archive``), behind its own
edge (cache off), and reports popgate's share of an auth call (session, 402) against it, round
by round: the before/after of a change, side by side in one run.

``make bench`` (tests/bench/bench_all.py) runs :func:`section` in the same run as the rest.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.bench_proxy import session_token
from tests.bench.harness import PY, Result, free_port, nginx, revision_env, start, table, tree, wait_port, wrk
from tests.support.edges import nginx as nginx_edge

REF = "nginx proxy_pass"
CACHED = "nginx+popgate-auth session, cache on"
UNCACHED = "nginx+popgate-auth session, cache off"
INLINE = "popgate inline session"
FA402 = "nginx+popgate-auth 402"
INLINE402 = "popgate inline 402"
SHARE = "  popgate's share, cache off"
SHARE402 = "  popgate's share, 402"


def at(base: str, what: str) -> str:
    """The case name of popgate's share at git revision ``base``."""
    return f"  popgate's share at {base}, {what}"


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


def section(seconds: int, rounds: int, conns: int, base: str = "") -> list[str]:
    """Run every case; the markdown section for loadtests/BENCHMARKS.md (``base``: popgate's
    shares at that git revision too, side by side)."""
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
        lean = free_port()
        auth_port, cmd = popgate(
            tmp,
            "auth",
            keyfile,
            f'mode = "auth"\ntrusted_proxies = ["127.0.0.1/32"]\nauth_listen = "127.0.0.1:{lean}"',
        )
        auth = start(cmd, auth_port)
        wait_port(lean)
        procs.append(auth)
        if base:
            base_lean = free_port()
            base_port, cmd = popgate(
                tmp,
                "base",
                keyfile,
                f'mode = "auth"\ntrusted_proxies = ["127.0.0.1/32"]\nauth_listen = "127.0.0.1:{base_lean}"',
            )
            base_proc = start(cmd, base_port, revision_env(base, tmp))
            wait_port(base_lean)
            procs.append(base_proc)
        on, off = free_port(), free_port()
        (Path(tmp) / "on").mkdir()
        (Path(tmp) / "off").mkdir()
        with contextlib.ExitStack() as stack:
            on_proc = stack.enter_context(nginx_edge(Path(tmp) / "on", on, auth_port, up, auth=lean))
            off_proc = stack.enter_context(
                nginx_edge(Path(tmp) / "off", off, auth_port, up, cache=False, auth=lean)
            )
            session = {"Authorization": f"PoP {session_token(keyfile)}"}
            with_auth = tree(auth.pid)
            extra = []
            if base:
                (Path(tmp) / "base-edge").mkdir()
                edge = free_port()
                stack.enter_context(
                    nginx_edge(Path(tmp) / "base-edge", edge, base_port, up, cache=False, auth=base_lean)
                )
                extra = [
                    (at(base, "cache off"), edge, tree(base_proc.pid), session),
                    (at(base, "402"), edge, tree(base_proc.pid), {}),
                ]
            cases = [
                (REF, ref, tree(ref_proc.pid), {}),
                (CACHED, on, [*tree(on_proc.pid), *with_auth], session),
                (UNCACHED, off, [*tree(off_proc.pid), *with_auth], session),
                (INLINE, inline_port, tree(inline.pid), session),
                (SHARE, off, with_auth, session),
                (SHARE402, off, with_auth, {}),
                *extra,
                (FA402, on, [*tree(on_proc.pid), *with_auth], {}),
                (INLINE402, inline_port, tree(inline.pid), {}),
            ]
            runs: dict[str, list[Result]] = {c[0]: [] for c in cases}
            for _ in range(rounds):
                for name, port, pids, headers in cases:
                    url = f"http://127.0.0.1:{port}/bench"
                    runs[name].append(wrk(name, url, pids, seconds=seconds, conns=conns, headers=headers))
                    print(f"  {name:40s} {runs[name][-1].rps:>10,.0f} req/s", flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return report(runs, seconds, rounds, conns, base)


def median_round(rs: list[Result]) -> Result:
    """The round with the median CPU µs per request (its own req/s, latencies)."""
    return sorted(rs, key=lambda r: r.cpu_us)[len(rs) // 2]


def spread(values: list[float]) -> str:
    """``median [min–max]`` of per-round values."""
    return f"{statistics.median(values):.2f}× [{min(values):.2f}–{max(values):.2f}]"


def report(runs: dict[str, list[Result]], seconds: int, rounds: int, conns: int, base: str = "") -> list[str]:
    def per_core(x: str, y: str) -> str:  # x's per CPU second against y's, round by round (side by side)
        return spread([ry.cpu_us / rx.cpu_us for rx, ry in zip(runs[x], runs[y], strict=True)])

    def cpu(name: str) -> str:
        us = [r.cpu_us for r in runs[name]]
        return f"{statistics.median(us):.0f} [{min(us):.0f}–{max(us):.0f}]"

    nginx_share = [u.cpu_us - s.cpu_us for u, s in zip(runs[UNCACHED], runs[SHARE], strict=True)]
    return [
        "## Forward-auth (nginx in front, popgate deciding)",
        "",
        f"`python tests/bench/bench_forward_auth.py --seconds {seconds} --rounds {rounds} --conns {conns}"
        f"{f' --base {base}' if base else ''}`"
        " (also part of `make bench`): one worker each (nginx `worker_processes 1`, popgate 1 process), "
        "memory store, no policy file; CPU µs per request summed over every process involved "
        "(nginx master + worker, popgate). Cases alternate within each round; the table shows each "
        "case's median round (by CPU µs per request), the ratios are computed round by round "
        "(cases side by side) and given as median [min–max] over the rounds. The session is a plain "
        "one (no budget, no binding): the verdict cache keeps its allow for `cache_ttl` (30 s).",
        "",
        table([median_round(rs) for rs in runs.values()], REF),
        "",
        "| CPU µs per request, median [min–max] over the rounds | µs |",
        "|---|---|",
        *(f"| {name.strip()} | {cpu(name)} |" for name in runs),
        f"| nginx's share, cache off (total − popgate's share) | {statistics.median(nginx_share):.0f} "
        f"[{min(nginx_share):.0f}–{max(nginx_share):.0f}] |",
        "",
        "| acceptance (per core: CPU µs per request, reference / case) | measured | goal |",
        "|---|---|---|",
        f"| nginx + popgate-auth session, cache on / nginx alone | {per_core(CACHED, REF)} "
        "| ≥ 0.6× (aim 0.8×) |",
        f"| nginx + popgate-auth session, cache off / nginx alone | {per_core(UNCACHED, REF)} | ≥ 0.2× |",
        f"| 402 through nginx + popgate / popgate inline 402 | {per_core(FA402, INLINE402)} | ≥ 1× |",
        f"| popgate inline session / nginx alone (beside) | {per_core(INLINE, REF)} | — |",
        "",
        *(
            [
                f"| popgate's share of an auth call, CPU µs: this code / {base} | median [min–max] |",
                "|---|---|",
                f"| session, cache off | {per_core(at(base, 'cache off'), SHARE)} |",
                f"| anonymous 402 | {per_core(at(base, '402'), SHARE402)} |",
                "",
            ]
            if base
            else []
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--base", default="", help="also popgate's shares at this git revision, side by side")
    args = ap.parse_args()
    print("\n".join(section(args.seconds, args.rounds, args.conns, args.base)))


if __name__ == "__main__":
    main()
