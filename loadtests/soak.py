"""A bounded soak that fails on growth: ``make soak`` or

    python loadtests/soak.py [--duration 1800] [--users 20] [--workers 2] [--interval 10]
                             [--max-rss-mb-per-min 1] [--max-fds-per-min 0.5]
                             [--max-keys-per-min 30] [--max-p99-ms-per-min 20] [--out loadtests/out]

Starts on loopback the flood stack (``loadtests/stack.py``: origin, x402 facilitator, a
throwaway redis-server, popgate with ``--workers``), runs locust headless with the
``flood`` shape (every user class, attackers included, held at ``--users``) for
``--duration`` seconds, and meanwhile samples every ``--interval`` seconds each worker's
RSS and open fds (``/proc``) and the store's keys (``DBSIZE``, per prefix with TTLs);
p99 per interval comes from locust's stats history. Writes ``SOAK.md``, ``soak.png`` and
``soak.json`` into ``--out`` and exits 1 when a slope fitted over the second half passes
its limit, a worker died, or locust's gate failed (see ``soak_verdict.py``). Everything it
starts it stops, by pid; the run and the sampler are bounded in time and count.
``--rejudge DIR`` judges a finished run's samples again with other limits, running nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtests.run_flood import run_locust  # noqa: E402
from loadtests.soak_probe import Sampler, p99_series  # noqa: E402
from loadtests.soak_report import markdown, plot  # noqa: E402
from loadtests.soak_verdict import DURABLE, Limits, judge  # noqa: E402
from loadtests.stack import start_stack  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=1800, help="seconds of load (30 min)")
    ap.add_argument("--users", type=int, default=20, help="users, held for the whole run")
    ap.add_argument("--workers", type=int, default=2, help="gateway worker processes")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    ap.add_argument("--out", default=str(ROOT / "loadtests/out"))
    ap.add_argument("--max-rss-mb-per-min", type=float, default=Limits.rss_mb_per_min)
    ap.add_argument("--max-fds-per-min", type=float, default=Limits.fds_per_min)
    ap.add_argument("--max-keys-per-min", type=float, default=Limits.keys_per_min)
    ap.add_argument("--max-p99-ms-per-min", type=float, default=Limits.p99_ms_per_min)
    ap.add_argument("--min-points", type=int, default=Limits.min_points, help="fewer in the half: fail")
    ap.add_argument("--durable", default=",".join(DURABLE), help="key prefixes that may grow")
    ap.add_argument("--max-p95-ms", type=float, default=5000.0, help="locust's gate (all requests)")
    ap.add_argument("--rejudge", metavar="DIR", help="judge a finished run's soak.json again, run nothing")
    args = ap.parse_args(argv)
    if args.duration < 4 * args.interval or args.interval <= 0:
        ap.error("--duration must cover at least four --interval")
    args.shape, args.store = "flood", "redis"
    return args


def limits(args: argparse.Namespace) -> Limits:
    return Limits(
        rss_mb_per_min=args.max_rss_mb_per_min,
        fds_per_min=args.max_fds_per_min,
        keys_per_min=args.max_keys_per_min,
        p99_ms_per_min=args.max_p99_ms_per_min,
        min_points=args.min_points,
        durable=tuple(p.strip() for p in args.durable.split(",") if p.strip()),
    )


def soak(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Run the soak; return (exit code, the data written to soak.json)."""
    import redis

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("SOAK.md", "soak.png", "soak.json", "summary.json", "locust_stats_history.csv"):
        (out / stale).unlink(missing_ok=True)
    print(f"soak: starting origin, facilitator, redis and popgate ({args.workers} workers)")
    stack = start_stack(out / "stack", store="redis", workers=args.workers)
    client = redis.Redis.from_url(stack.store_url, socket_timeout=5)
    max_samples = int(args.duration / args.interval) + 30  # the run's tail and stop are bounded too
    sampler = Sampler(stack.gateway.pid, client, args.interval, max_samples)
    try:
        sampler.start()
        print(f"soak: {args.duration} s, {args.users} users → {stack.base_url}; report in {out}")
        code = run_locust(stack, out, args)
    finally:
        sampler.stop.set()
        sampler.join(30)
        client.close()
        stack.close()
    return finish(out, args, sampler.samples, sampler.t0, code)


def finish(
    out: Path, args: argparse.Namespace, samples: list[dict[str, Any]], t0: float, code: int
) -> tuple[int, dict[str, Any]]:
    """Judge the samples (and locust's history in ``out``); write SOAK.md, soak.png, soak.json."""
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    p99 = p99_series(out / "locust_stats_history.csv", t0)
    lim = limits(args)
    verdict = judge(samples, p99, args.duration, args.interval, lim)
    if code != 0:
        verdict.problems.append(f"locust's gate failed (exit {code}): {summary.get('problems')}")
    meta = {
        "duration": float(args.duration),
        "users": args.users,
        "workers": args.workers,
        "store": "redis",
        "interval": args.interval,
        "min_points": lim.min_points,
        "durable": list(lim.durable),
        "locust_exit": code,
        "requests": summary.get("requests", "?"),
        "failures": summary.get("failures", "?"),
    }
    data = {
        "meta": meta,
        "passed": verdict.passed,
        "problems": verdict.problems,
        "checks": [{**c.__dict__, "passed": c.passed} for c in verdict.checks],
        "samples": samples,
        "p99": p99,
    }
    (out / "soak.json").write_text(json.dumps(data))
    plotted = plot(samples, p99, meta, out / "soak.png")
    text = markdown(verdict, meta, samples, plotted)
    (out / "SOAK.md").write_text(text)
    print(text)
    return (0 if verdict.passed else 1), data


def rejudge(args: argparse.Namespace) -> tuple[int, dict[str, Any]]:
    """Judge a finished run's samples again (``--rejudge DIR``) with this command's limits."""
    out = Path(args.rejudge).resolve()
    old = json.loads((out / "soak.json").read_text())
    samples, meta = old["samples"], old["meta"]
    args.duration, args.interval = int(meta["duration"]), float(meta["interval"])
    args.users, args.workers = meta["users"], meta["workers"]
    t0 = samples[0]["at"] - samples[0]["t"]
    return finish(out, args, samples, t0, int(meta["locust_exit"]))


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    code, _data = rejudge(args) if args.rejudge else soak(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
