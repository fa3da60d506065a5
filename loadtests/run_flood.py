"""One command, one bounded flood run, one report: ``make flood`` or

    python loadtests/run_flood.py [--duration 60] [--users 40] [--shape staged]
                                  [--store sqlite|redis] [--workers 1] [--processes 1]
                                  [--overload] [--out loadtests/out]

Starts on loopback the demo origin, a local x402 facilitator and popgate
(``loadtests/flood.toml`` + ``flood-policy.toml``, embedded SQLite store or a
throwaway Redis), then locust headless with every user class; scrapes
popgate's ``/metrics`` on the admin port every two seconds; stops everything
it started and writes into ``--out``: ``REPORT.md`` (throughput and latency
per user class, decisions by class, fees, attacks, puzzle cost and difficulty),
``difficulty.png``, locust's CSVs and HTML, ``summary.json``, the logs.
Exits with locust's exit code: non-zero when the gate failed.

``--processes N`` runs locust distributed: a master and N worker processes
(``locust --processes N``), the tallies summed on the master (loadtests/gate.py).
``--overload`` is the run beyond capacity: see loadtests/overload.py.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from loadtests.stack import Stack, start_stack  # noqa: E402

CLASS_ORDER = (
    "FloodBot",
    "PuzzleBot",
    "Human",
    "PayingAgent",
    "VerifiedAgent",
    "AccountUser",
    "WorldIdHuman",
    "Replayer",
    "Sybil",
    "PrivacyPassHuman",
    "DelegatedFleet",
)
# Requests that exchange a credential for a session: reported apart from the class's
# per-request latency (a zkLogin or World ID exchange verifies a Groth16 proof in the
# gateway's bounded proof pool, once per user; see "(exchange)" rows in the report).
EXCHANGES = ("POST zklogin", "POST worldid")
EXPECTED: dict[str, str] = {
    "AccountUser (exchange)": "id_token + zkLogin proof → session, once per user (Groth16 in the proof pool)",
    "WorldIdHuman (exchange)": "World ID proof → session, once (Groth16 in the proof pool)",
    "FloodBot": "only 402 / 429 / 403, never the origin",
    "PuzzleBot": "through after solving puzzles (cost below)",
    "Human": "through as `human`, never charged",
    "PayingAgent": "through, charged the price exactly once (credits, x402)",
    "VerifiedAgent": "through as `verified-agent` (Web Bot Auth)",
    "AccountUser": "through as `account` (zkLogin-style session, RFC 9421)",
    "WorldIdHuman": "World ID proof → session once, then `human`",
    "Replayer": "every replay refused",
    "Sybil": "one credential → at most one session",
    "PrivacyPassHuman": "Privacy Pass token → `human` + session; reused / other-origin tokens refused",
    "DelegatedFleet": "20 agents of one person: `backed-agent` within the daily quota, forgeries refused",
}


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[s.name].append((dict(s.labels), float(s.value)))
    return out


class Scraper(threading.Thread):
    """Samples /metrics: total requests and puzzle difficulty over time."""

    def __init__(self, stack: Stack, interval: float) -> None:
        super().__init__(daemon=True)
        self.stack, self.interval = stack, interval
        self.samples: list[dict[str, Any]] = []
        self.stop = threading.Event()
        self.t0 = time.time()

    def sample(self) -> dict[str, Any] | None:
        try:
            m = parse_metrics(self.stack.metrics())
        except OSError:
            return None
        reqs = sum(v for _l, v in m.get("popgate_requests_total", []))
        bits = {labels.get("scope", ""): v for labels, v in m.get("popgate_puzzle_difficulty_bits", [])}
        lag = sum(v for _l, v in m.get("popgate_loop_lag_seconds", []))
        return {"t": time.time() - self.t0, "requests": reqs, "bits": bits, "lag": lag, "metrics": m}

    def run(self) -> None:
        while not self.stop.is_set():
            s = self.sample()
            if s is not None:
                self.samples.append({k: v for k, v in s.items() if k != "metrics"})
            self.stop.wait(self.interval)


def run_locust(
    stack: Stack, out: Path, args: argparse.Namespace, extra_env: dict[str, str] | None = None
) -> int:
    env = {
        **os.environ,
        **stack.env,
        "POPGATE_LT_SHAPE": args.shape,
        "POPGATE_LT_DURATION": str(args.duration),
        "POPGATE_LT_USERS": str(args.users),
        "POPGATE_LT_SUMMARY": str(out / "summary.json"),
        "POPGATE_LT_REQUIRE_CLASSES": "1",
        "POPGATE_LT_MAX_P95_MS": str(args.max_p95_ms),
        **(extra_env or {}),
    }
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(ROOT / "loadtests/locustfile.py"),
        "--headless",
        "--host",
        stack.base_url,
        "--csv",
        str(out / "locust"),
        "--html",
        str(out / "locust.html"),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    processes = getattr(args, "processes", 1)  # soak.py's arguments have no --processes
    if processes > 1:
        cmd += ["--processes", str(processes)]
    if getattr(args, "full_history", False):
        cmd.append("--csv-full-history")
    with open(out / "locust.log", "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            return proc.wait(args.duration + 120)
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(30)
            return 3


def class_rows(out: Path) -> list[dict[str, Any]]:
    """Per user class, from locust's stats CSV: requests, failures, req/s, latency."""
    rows: dict[str, dict[str, Any]] = {}
    path = out / "locust_stats.csv"
    if not path.exists():
        return []
    for r in csv.DictReader(path.open()):
        name = r["Name"]
        if name == "Aggregated":
            continue
        klass, _, rest = name.partition(" ")
        if rest.startswith(EXCHANGES):
            klass += " (exchange)"
        row = rows.setdefault(
            klass,
            {
                "class": klass,
                "requests": 0,
                "failures": 0,
                "rps": 0.0,
                "p50": 0.0,
                "p95": 0.0,
                "p99": 0.0,
                "max": 0.0,
            },
        )
        n = int(r["Request Count"])
        row["requests"] += n
        row["failures"] += int(r["Failure Count"])
        row["rps"] += float(r["Requests/s"])
        for k, col in (("p50", "50%"), ("p95", "95%"), ("p99", "99%"), ("max", "Max Response Time")):
            if n and r.get(col) not in (None, "", "N/A"):
                row[k] = max(row[k], float(r[col]))  # worst request type of the class
    order = [k for c in CLASS_ORDER for k in (c, f"{c} (exchange)")]
    return [rows[c] for c in order if c in rows]


def plot(samples: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if len(samples) < 2:
        return False
    ts = [s["t"] for s in samples[1:]]
    rate = [
        (b["requests"] - a["requests"]) / max(b["t"] - a["t"], 1e-6) for a, b in itertools.pairwise(samples)
    ]
    scopes = sorted({k for s in samples for k in s["bits"]})
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot(ts, rate, color="0.35", label="requests/s (popgate)")
    ax.set_xlabel("seconds")
    ax.set_ylabel("requests/s")
    ax2 = ax.twinx()
    colors = ("tab:red", "tab:orange", "tab:green", "tab:purple", "tab:brown")
    for i, scope in enumerate(scopes):
        ax2.step(
            [s["t"] for s in samples],
            [s["bits"].get(scope, float("nan")) for s in samples],
            where="post",
            color=colors[i % len(colors)],
            label=f"difficulty bits ({scope})",
        )
    ax2.set_ylabel("puzzle difficulty (bits)")
    lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax.legend(lines, labels, loc="upper left", fontsize="small")
    ax.set_title("popgate under an agent flood")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def report(
    out: Path,
    args: argparse.Namespace,
    code: int,
    samples: list[dict[str, Any]],
    final: dict[str, list[tuple[dict[str, str], float]]],
    fac: dict[str, Any],
    plotted: bool,
) -> str:
    summary = json.loads((out / "summary.json").read_text()) if (out / "summary.json").exists() else {}
    rows = class_rows(out)
    L = [
        f"# popgate flood run — {'PASSED' if code == 0 else 'FAILED'} (exit {code})",
        "",
        f"{args.duration} s, shape `{args.shape}`, peak {args.users} users, store `{args.store}`, "
        f"popgate workers {args.workers}, locust processes {summary.get('workers', 1)}; "
        "everything on 127.0.0.1. "
        f"Locust: {summary.get('requests', '?')} requests, {summary.get('failures', '?')} unexpected, "
        f"p95 {summary.get('p95_ms', '?')} ms.",
        "",
    ]
    if summary.get("problems"):
        L += ["**Gate problems:**", ""] + [f"- {p}" for p in summary["problems"]] + [""]
    L += [
        "## Per user class (locust)",
        "",
        "| class | expected | requests | unexpected | req/s | p50 ms | p95 ms | p99 ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        L.append(
            f"| {r['class']} | {EXPECTED.get(r['class'], '')} | {r['requests']} | {r['failures']} | "
            f"{r['rps']:.1f} | {r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f} |"
        )
    silent = summary.get("silent_classes") or []
    L += [
        "",
        f"Classes in the run: {', '.join(summary.get('classes', []))}."
        + (f" Made no request: {', '.join(silent)}." if silent else ""),
        "",
    ]
    L += ["## Attacks", "", "| attack | attempts | succeeded |", "|---|---|---|"]
    for k, v in (summary.get("attacks") or {}).items():
        L.append(f"| {k} | {v['attempts']} | {v['succeeded']} |")
    n_breach = sum((summary.get("breaches") or {}).values())
    L += ["", f"Successful attacks and charge errors: **{n_breach}**.", ""]
    if summary.get("breach_examples"):
        L += [f"- {k}: {v}" for k, v in summary["breach_examples"].items()] + [""]
    L += ["## Decisions by class (popgate /metrics)", "", "| class | decision | requests |", "|---|---|---|"]
    for labels, v in sorted(
        final.get("popgate_requests_total", []),
        key=lambda x: (x[0].get("klass", ""), x[0].get("decision", "")),
    ):
        L.append(f"| {labels.get('klass')} | {labels.get('decision')} | {v:.0f} |")
    pz = summary.get("puzzle") or {}
    paid = summary.get("paid") or {}
    price = int(os.environ.get("POPGATE_LT_PRICE", "1000"))
    fees = final.get("popgate_fees_atomic_total", [])
    L += ["", "## Fees", "", "| rail | route | collected (atomic, 6 decimals) |", "|---|---|---|"]
    for labels, v in fees:
        L.append(f"| {labels.get('rail')} | {labels.get('route')} | {v:.0f} |")
    L += [
        "",
        f"Requests the paying users got through: {dict(paid)} at {price} each = "
        f"{sum(paid.values()) * price} atomic; popgate's fee counter: {sum(v for _l, v in fees):.0f}; "
        f"the facilitator settled {fac.get('settled', '?')} x402 payments worth {fac.get('value', '?')} "
        f"(x402 requests through: {paid.get('x402', 0)}). Credit balances were reconciled by the gate.",
    ]
    in_flight = {k: v for k, v in (summary.get("uncertain") or {}).items() if v}
    if in_flight:
        L.append(
            f"Paid requests still in flight when the run stopped (sent, answer never seen by the "
            f"user; popgate may have charged them, once): {in_flight}. They are the only "
            "allowed difference between the users' count and popgate's."
        )
    L.append("")
    L += ["## Puzzle cost and difficulty", ""]
    if pz.get("solved"):
        L.append(
            f"PuzzleBot: {pz['solved']:.0f} puzzles solved, {pz.get('hashes', 0):,.0f} hashes, "
            f"{pz.get('seconds', 0):.1f} s of CPU, {pz.get('requests_through', 0):.0f} requests through: "
            f"**{pz.get('hashes_per_request') or 0:,.0f} hashes and "
            f"{pz.get('solve_ms_per_request') or 0:.1f} ms of CPU per request**. "
            f"Bits seen: {pz.get('bits_seen')}. "
            f"Priced out: {summary.get('notes', {}).get('puzzle_priced_out', 0)}."
        )
    bits = [b for s in samples for b in s["bits"].values()]
    if bits:
        L.append(
            "\nDifficulty offered (popgate_puzzle_difficulty_bits, "
            f"scraped every {args.scrape_interval:g} s): "
            f"min {min(bits):.0f}, max {max(bits):.0f} bits."
        )
    if plotted:
        L += ["", "![difficulty and request rate](difficulty.png)"]
    L += [
        "",
        "Files: `locust_stats.csv`, `locust_stats_history.csv`, `locust_failures.csv`, "
        "`locust.html`, `summary.json`, `metrics.json` (difficulty/rate series), `stack/` (config, logs).",
        "",
    ]
    return "\n".join(L)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=60, help="seconds of load (the shape stops itself)")
    ap.add_argument("--users", type=int, default=40, help="peak users")
    ap.add_argument("--shape", default="staged", choices=("staged", "ramp", "spike", "flood"))
    ap.add_argument("--store", default="sqlite", choices=("sqlite", "redis", "memory"))
    ap.add_argument("--workers", type=int, default=1, help="popgate worker processes")
    ap.add_argument("--processes", type=int, default=1, help="locust processes (distributed: master + N)")
    ap.add_argument("--overload", action="store_true", help="the overload run (loadtests/overload.py)")
    ap.add_argument("--factor", type=float, default=3.0, help="--overload: raw flood rate / capacity")
    ap.add_argument("--out", default=str(ROOT / "loadtests/out"))
    ap.add_argument("--scrape-interval", type=float, default=2.0)
    ap.add_argument("--max-p95-ms", type=float, default=2000.0)
    args = ap.parse_args()
    if args.overload:
        # why: overload.py imports this module (its helpers); imported here only when asked for
        from loadtests import overload

        return overload.main(args)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("summary.json", "REPORT.md", "difficulty.png"):
        (out / stale).unlink(missing_ok=True)
    print(f"flood: starting origin, facilitator and popgate (store={args.store}, workers={args.workers})")
    stack = start_stack(out / "stack", store=args.store, workers=args.workers)
    os.environ["POPGATE_LT_PRICE"] = stack.env["POPGATE_LT_PRICE"]
    scraper = Scraper(stack, args.scrape_interval)
    try:
        scraper.start()
        print(
            f"flood: locust, {args.duration} s, shape {args.shape}, "
            f"peak {args.users} users → {stack.base_url}"
        )
        code = run_locust(stack, out, args)
        scraper.stop.set()
        scraper.join(10)
        last = scraper.sample()
        final = last["metrics"] if last else {}
        try:
            with urllib.request.urlopen(stack.facilitator_url + "/stats", timeout=5) as r:
                fac = json.loads(r.read())
        except OSError:
            fac = {}
    finally:
        scraper.stop.set()
        stack.close()
    (out / "metrics.json").write_text(json.dumps(scraper.samples))
    plotted = plot(scraper.samples, out / "difficulty.png")
    text = report(out, args, code, scraper.samples, final, fac, plotted)
    (out / "REPORT.md").write_text(text)
    print(text)
    print(f"flood: report in {out / 'REPORT.md'}; exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
