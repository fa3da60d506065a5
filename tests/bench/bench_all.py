"""The whole benchmark in one run, on loopback: proxies, workers, memory, verifiers.

    python tests/bench/bench_all.py [--seconds 5] [--conns 32] [--rounds 3] [--workers 2]
                                    [--flood-seconds 60] [--out loadtests/BENCHMARKS.md]

(a) the origin directly (nginx static), (b) a bare aiohttp proxy, (c) nginx
proxy_pass, (d) popgate with valid sessions, (e) popgate answering an
unverified flood with 402s, (f) each of (b), (d), (e) with 1 and with N worker
processes (SO_REUSEPORT); driven by wrk from a separate process. All of them
run at once and the cases take turns, round after round; each case keeps its
best round (the machine is shared: noise only ever slows a case). Then a
sustained flood (``--flood-seconds``, random paths and client networks) on
popgate with N workers, sampling each worker's RSS: peak (VmHWM) and growth.
Then forward-auth (tests/bench/bench_forward_auth.py: nginx alone vs nginx + popgate,
verdict cache on and off, 402s; tests/bench/bench_forward_auth_floor.py: the same
auth_request with the cheapest auth servers behind it) and the verifier micro-benchmarks (Groth16,
JWT/identity, puzzle, payments).
Prints everything and writes a markdown report. popgate runs with the shipped
policy (policies/default.toml), puzzles on, the embedded SQLite store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.bench import bench_forward_auth, bench_forward_auth_floor  # noqa: E402
from tests.bench.bench_proxy import session_token  # noqa: E402
from tests.bench.harness import PY, Result, free_port, nginx, peak_rss_mb, start, table, tree, wrk  # noqa: E402

FLOOD_LUA = """
math.randomseed(os.time())
request = function()
  local path = "/api/items/" .. math.random(1, 1000000000)
  -- a botnet's spread: /24s from all over the unicast IPv4 space (~14 M of them), so the
  -- per-network state reaches its cap (difficulty max_networks = 100,000) within the run
  local xff = math.random(1, 223) .. "." .. math.random(0, 255) .. "."
    .. math.random(0, 255) .. "." .. math.random(1, 254)
  return wrk.format("GET", path, { ["X-Forwarded-For"] = xff, ["User-Agent"] = "flood/1.0" })
end
"""

# (e) and (e0) measure the 402 path: lag shedding off (a saturated worker would answer part
# of the flood with cheaper 503s); the challenge window is the default in (e), 0 in (e0)
NO_LAG_SHED = "[overload]\nlag_min_rate = 1e9"
MINTED = NO_LAG_SHED + "\nchallenge_window = 0"
MINTED_CASE = "(e0) popgate 402 flood, minted per request ×1"
BARE_N = """
import sys
from aiohttp import web
sys.path.insert(0, {root!r})
from tests.bench.bare_proxy import make_app
web.run_app(make_app(sys.argv[2]), host="127.0.0.1", port=int(sys.argv[1]), access_log=None,
            print=None, reuse_port=True)
"""


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def workers_of(pid: int) -> list[int]:
    """The serving processes: the workers when popgate forked some, else itself."""
    kids = [p for p in tree(pid) if p != pid and "popgate.gateway" in _cmd(p)]
    return kids or [pid]


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def bare_proxies(n: int, origin: str) -> tuple[list[subprocess.Popen[bytes]], int]:
    port = free_port()
    script = BARE_N.format(root=str(ROOT))
    procs = [
        subprocess.Popen(
            [PY, "-c", script, str(port), origin],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(n)
    ]
    from tests.bench.harness import wait_port

    wait_port(port)
    time.sleep(0.5 if n > 1 else 0)
    return procs, port


def popgate(
    tmp: Path,
    origin: str,
    workers: int,
    policy: Path,
    extra: str = "",
    tag: str = "",
    env: dict[str, str] | None = None,
) -> tuple[subprocess.Popen[bytes], int]:
    port, admin = free_port(), free_port()
    (tmp / f"gw{workers}{tag}").mkdir(exist_ok=True)
    cfg = tmp / f"gw{workers}{tag}" / "popgate.toml"
    cfg.write_text(f"""
[server]
listen = "127.0.0.1:{port}"
admin = "127.0.0.1:{admin}"
upstream = "{origin}"
trusted_proxies = ["127.0.0.1/32"]
[store]
url = "sqlite:///{tmp / f"gw{workers}{tag}" / "store.db"}"
[sessions]
keys = [{{kid = "k1", secret_file = "{tmp / "k1"}"}}]
[policy]
file = "{policy}"
[puzzle]
keys = [{{kid = "p1", secret_file = "{tmp / "k1"}"}}]
[credits]
{extra}
""")
    proc = start(
        [
            PY,
            "-m",
            "popgate.gateway",
            "run",
            "--config",
            str(cfg),
            "--log-level",
            "WARNING",
            "--workers",
            str(workers),
        ],
        port,
        env,
    )
    time.sleep(1.0 if workers > 1 else 0.2)  # every worker listening
    return proc, port


def wrk_flood(
    url: str, pids: list[int], seconds: int, conns: int, script: Path, sample_every: float = 5.0
) -> tuple[Result, list[tuple[float, dict[int, float]]]]:
    """wrk with the random-path/network script, sampling each pid's RSS meanwhile."""
    args = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    t0, samples = time.time(), []
    while proc.poll() is None:
        samples.append((time.time() - t0, {p: rss_mb(p) for p in pids}))
        time.sleep(sample_every)
    out = proc.stdout.read() if proc.stdout else ""
    samples.append((time.time() - t0, {p: rss_mb(p) for p in pids}))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))

    def lat(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return Result(
        "popgate-flood-sustained", rps, lat("50"), lat("99"), 0.0, int(non2xx.group(1)) if non2xx else 0
    ), samples


def micro(name: str, fn, argv: list[str]) -> str:  # type: ignore[no-untyped-def]
    """Run a micro-benchmark's main() with ``argv``; its printed output."""
    buf = io.StringIO()
    saved = sys.argv
    sys.argv = [name, *argv]
    try:
        with contextlib.redirect_stdout(buf):
            r = fn()
            if asyncio.iscoroutine(r):
                asyncio.run(r)
    except Exception as exc:  # a micro-benchmark failing must not lose the rest
        buf.write(f"\n[{name} failed: {type(exc).__name__}: {exc}]\n")
    finally:
        sys.argv = saved
    return buf.getvalue().strip()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3, help="wrk rounds per case; the best is kept")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--flood-seconds", type=int, default=60)
    ap.add_argument("--policy", default=str(ROOT / "policies/default.toml"))
    ap.add_argument("--skip-micro", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "loadtests/BENCHMARKS.md"))
    args = ap.parse_args()
    if not (shutil.which("wrk") and shutil.which("nginx")):
        sys.exit("bench_all needs wrk and nginx (make bench installs them: apt-get install wrk nginx-light)")
    n = args.workers
    tmp = Path(tempfile.mkdtemp(prefix="pg-benchall-"))
    (tmp / "k1").write_bytes(os.urandom(32).hex().encode())
    procs: list[subprocess.Popen[bytes]] = []
    results: list[Result] = []
    lines: list[str] = []

    def measure(cases: list[tuple[str, int, list[int], dict[str, str]]]) -> None:
        """Every case once per round, round-robin (so a noisy minute hits them all alike);
        the best round of each case is kept: noise only ever slows a run down."""
        best: dict[str, Result] = {}
        for rnd in range(args.rounds):
            for name, port, pids, headers in cases:
                r = wrk(
                    name,
                    f"http://127.0.0.1:{port}/api/items",
                    pids,
                    seconds=args.seconds,
                    conns=args.conns,
                    headers=headers,
                )
                print(
                    f"  [{rnd + 1}/{args.rounds}] {name:28s} {r.rps:>10,.0f} req/s  p50 {r.p50_ms:.2f} ms  "
                    f"p99 {r.p99_ms:.2f} ms",
                    flush=True,
                )
                if name not in best or r.rps > best[name].rps:
                    best[name] = r
        results.extend(best[name] for name, *_ in cases)

    try:
        up = free_port()
        p, _ = nginx(up, body="hello from the origin")
        procs.append(p)
        origin = f"http://127.0.0.1:{up}"
        token = session_token(str(tmp / "k1"))
        auth = {"Authorization": f"PoP {token}"}
        print(
            f"bench_all: {args.seconds}s per case, best of {args.rounds} rounds, {args.conns} connections, "
            f"N = {n} workers"
        )
        ref = free_port()
        ngx = nginx(ref, upstream=up)[0]
        procs.append(ngx)
        cases: list[tuple[str, int, list[int], dict[str, str]]] = [
            ("(a) direct", up, tree(p.pid), {}),
            ("(c) nginx proxy_pass", ref, tree(ngx.pid), {}),
        ]
        gateways: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
        for w in sorted({1, n}):
            bare, bport = bare_proxies(w, origin)
            procs.extend(bare)
            gw, gport = popgate(tmp, origin, w, Path(args.policy).resolve(), NO_LAG_SHED)
            procs.append(gw)
            gateways[w] = (gw, gport)
            cases += [
                (f"(b) bare aiohttp ×{w}", bport, [b.pid for b in bare], {}),
                (f"(d) popgate session ×{w}", gport, tree(gw.pid), auth),
                (f"(e) popgate 402 flood ×{w}", gport, tree(gw.pid), {}),
            ]
        # the 402 path as it was before 402s were reused: each one minted and rendered per request
        minted, mport = popgate(tmp, origin, 1, Path(args.policy).resolve(), MINTED, "minted")
        procs.append(minted)
        cases.append((MINTED_CASE, mport, tree(minted.pid), {}))
        measure(cases)
        peaks: dict[str, list[float]] = {
            f"×{w} after (d),(e)": [peak_rss_mb(q) for q in workers_of(gw.pid)]
            for w, (gw, _) in gateways.items()
        }
        for q in procs:
            if q not in (p, gateways[n][0]):
                q.terminate()
        gw, gport = gateways[n]
        script = tmp / "flood.lua"
        script.write_text(FLOOD_LUA)
        print(f"  sustained flood: {args.flood_seconds}s, random paths and client networks ...", flush=True)
        wpids = workers_of(gw.pid)
        flood, samples = wrk_flood(
            f"http://127.0.0.1:{gport}/", wpids, args.flood_seconds, args.conns, script
        )
        hwm = {q: peak_rss_mb(q) for q in wpids}
        gw.terminate()
        gw.wait(15)
        b = {r.name: r for r in results}

        def ratio(x: str, y: str) -> float:
            return b[x].rps / b[y].rps

        d1, dn = b["(d) popgate session ×1"], b[f"(d) popgate session ×{n}"]
        # The bounded per-network state fills first (about 35 s at ~6k req/s); then RSS must be flat.
        tail = max(0, args.flood_seconds - 20)
        late = next((s for t, s in samples if t >= tail), samples[0][1])
        last = samples[-1][1]
        growth = {q: last[q] - late.get(q, last[q]) for q in last}
        total_growth = {q: last[q] - samples[0][1].get(q, last[q]) for q in last}
        lines += [
            "# popgate benchmarks",
            "",
            f"One run of `python tests/bench/bench_all.py --seconds {args.seconds} --conns {args.conns} "
            f"--rounds {args.rounds} --workers {n} --flood-seconds {args.flood_seconds}` (best of "
            f"{args.rounds} rounds per case) on {os.cpu_count()} cores "
            f"({platform.processor() or platform.machine()}, Python {platform.python_version()}), "
            f"{time.strftime('%Y-%m-%d')}. wrk (1 thread, {args.conns} connections) on loopback; "
            f"origin: nginx returning a static body; popgate: `{Path(args.policy).name}`, puzzles on, "
            "SQLite store. Ratios within one run; the absolute numbers move with the machine's load.",
            "",
            "## Proxies",
            "",
            table(results, "(b) bare aiohttp ×1", "(c) nginx proxy_pass"),
            "",
            "| acceptance | measured | goal |",
            "|---|---|---|",
            f"| popgate session / bare aiohttp, 1 worker | "
            f"{ratio('(d) popgate session ×1', '(b) bare aiohttp ×1'):.2f} | ≥ 0.8 |",
            f"| popgate session / bare aiohttp, {n} workers | "
            f"{ratio(f'(d) popgate session ×{n}', f'(b) bare aiohttp ×{n}'):.2f} | ≥ 0.8 |",
            f"| popgate session, {n} workers / 1 worker | "
            f"{ratio(f'(d) popgate session ×{n}', '(d) popgate session ×1'):.2f} | ≥ 1.6 |",
            "| 402 CPU µs/req, reused within a window / minted per request, 1 worker | "
            f"{b['(e) popgate 402 flood ×1'].cpu_us / b[MINTED_CASE].cpu_us:.2f} | ≤ 0.6 |",
            f"| popgate 402 flood, {n} workers / 1 worker | "
            f"{ratio(f'(e) popgate 402 flood ×{n}', '(e) popgate 402 flood ×1'):.2f} | — |",
            f"| bare aiohttp, {n} workers / 1 worker | "
            f"{ratio(f'(b) bare aiohttp ×{n}', '(b) bare aiohttp ×1'):.2f} | — |",
            f"| popgate session, req/s per core used, {n} workers / 1 worker | "
            f"{(dn.rps / dn.cores) / (d1.rps / d1.cores):.2f} | — |",
            f"| peak RSS per worker, {args.flood_seconds} s sustained flood | "
            f"{', '.join(f'{v:.1f}' for v in hwm.values())} MB | < 200 MB |",
            f"| RSS growth per worker, last 20 s of the flood | "
            f"{', '.join(f'{v:+.1f}' for v in growth.values())} MB | ≈ 0 |",
            f"| RSS growth per worker, whole flood (bounded state filling) | "
            f"{', '.join(f'{v:+.1f}' for v in total_growth.values())} MB | — |",
            "",
            f"Where the {n}-worker ceiling comes from: during (d) ×1 popgate used {d1.cores:.2f} cores "
            f"(one worker is bound by one core) and the machine was {d1.idle_pct:.0f} % idle; during (d) "
            f"×{n} popgate used {dn.cores:.2f} cores and the machine was {dn.idle_pct:.0f} % idle: wrk, the "
            f"origin and the kernel's loopback work share the same {os.cpu_count()} cores, so ×{n}/×1 "
            "is capped by what they leave, for popgate and the bare proxy alike.",
            "",
            f"Sustained flood: {flood.rps:,.0f} req/s, p50 {flood.p50_ms:.2f} ms, p99 {flood.p99_ms:.2f} ms, "
            f"{flood.non2xx:,} non-2xx (402s) over {args.flood_seconds} s, every request a new path "
            "and a random client /24 from the whole unicast IPv4 space (X-Forwarded-For from a "
            "trusted proxy). Per-network state is bounded (the difficulty tracker keeps at most "
            "`max_networks` = 100,000 networks per worker, in two generations: those not seen for a "
            "generation go; rate buckets live in the store), so RSS rises while that fills and then "
            "stays flat.",
            "",
            "RSS per worker during the flood (MB, VmRSS, every 5 s): "
            + "; ".join(f"{t:.0f}s " + "/".join(f"{v:.1f}" for v in s.values()) for t, s in samples),
            "",
            "Peak RSS (VmHWM) per serving process after the throughput cases: "
            + "; ".join(f"{k}: {', '.join(f'{v:.1f}' for v in vs)} MB" for k, vs in peaks.items()),
            "",
        ]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    print("  forward-auth: nginx alone vs nginx + popgate (cache on, off) vs inline ...", flush=True)
    lines += bench_forward_auth.section(args.seconds, args.rounds, args.conns)
    print("  forward-auth floor: nginx auth_request with a C stub, a Python stub, popgate ...", flush=True)
    lines += bench_forward_auth_floor.section(3, args.rounds, args.conns)
    from tests.bench import bench_observe

    print("  bench_observe ...", flush=True)
    lines += [
        "## Logs and traces (tests/bench/bench_observe.py, same run)",
        "",
        "```",
        micro("bench_observe", bench_observe.main, ["--seconds", str(args.seconds), "--rounds", "2"]),
        "```",
        "",
    ]
    if not args.skip_micro:
        from tests.bench import bench_groth16, bench_identity, bench_payments, bench_puzzle, bench_vouchers

        lines += ["## Verification costs (micro-benchmarks, same run)", ""]
        for name, fn, argv in (
            ("bench_groth16", bench_groth16.main, ["--fast-runs", "10", "--naive-runs", "1"]),
            ("bench_identity", lambda: bench_identity.main(True), []),
            ("bench_puzzle", bench_puzzle.main, []),
            ("bench_payments", bench_payments.main, ["--n", "1000"]),
            ("bench_vouchers", lambda: bench_vouchers.main(args.seconds), []),
        ):
            print(f"  {name} ...", flush=True)
            lines += [f"### {name}", "", "```", micro(name, fn, argv), "```", ""]
    text = "\n".join(lines)
    print("\n" + text)
    Path(args.out).write_text(text + "\n")
    print(f"\nwritten to {args.out}")


if __name__ == "__main__":
    main()
