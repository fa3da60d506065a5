"""The overload run: ``make flood FLOOD_ARGS=--overload`` (``run_flood.py --overload``).

A flood several times larger than popgate, twice on the same machine: once with
admission control off (``[overload] enabled = false``), once with the shipped
defaults, each on a fresh stack (origin, facilitator, popgate with ``--workers``).

1. Capacity: against the admission-off stack, :mod:`loadtests.raw_flood` offers far
   more than popgate can answer for ``CALIBRATE`` seconds; the rate popgate answers
   (all 402s) is its capacity for the flood's requests.
2. Each phase: locust's whole population (``--users``, the ``flood`` shape: people,
   paying agents, accounts, bots, attackers; ``--processes`` locust processes) and
   the raw driver offering ``--factor`` × capacity of anonymous requests, together
   for ``--duration`` seconds.

Writes ``OVERLOAD.md`` (per class success rate and p99 in both phases, the flood's
offered and answered rates, attacks, the acceptance checks), ``goodput.png``
(successful requests/s per class over time, and the raw flood's answers), and per
phase a directory with locust's CSVs, the raw driver's JSON and the stack's logs.
Exit status 0 when the admission-on phase meets the acceptance checks.
"""

from __future__ import annotations

import argparse
import csv
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

from loadtests.run_flood import ROOT, Scraper, class_rows, run_locust
from loadtests.stack import start_stack

CALIBRATE = 5.0
TICK = os.sysconf("SC_CLK_TCK")
PEOPLE = ("Human", "AccountUser", "WorldIdHuman")
AGENTS = ("PayingAgent", "VerifiedAgent")
OFF = "[overload]\nenabled = false\n"


def raw_flood(url: str, rate: float, seconds: float, out: Path) -> dict[str, Any]:
    """Run the raw driver as its own process (its own core's worth of Python)."""
    cmd = [sys.executable, str(ROOT / "loadtests/raw_flood.py"), "--url", url, "--rate", str(rate)]
    cmd += ["--duration", str(seconds), "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=seconds + 60)
    return dict(json.loads(out.read_text()))


def phase(name: str, extra: str, args: argparse.Namespace, out: Path, rate: float | None) -> dict[str, Any]:
    """One stack, one run; ``rate`` None: only measure capacity."""
    d = out / name
    d.mkdir(parents=True, exist_ok=True)
    stack = start_stack(d / "stack", store=args.store, workers=args.workers, extra_config=extra)
    result: dict[str, Any] = {"name": name}
    try:
        if rate is None:
            cal = raw_flood(stack.base_url, 200_000, CALIBRATE, d / "calibrate.json")
            return {"capacity": cal["answered_rps"], "calibration": cal}
        scraper = Scraper(stack, 1.0)
        scraper.start()
        pids = _tree(stack.gateway.pid)
        cpu0, host0 = _cpu(pids), _host()
        got: dict[str, Any] = {}
        flood = threading.Thread(
            target=lambda: got.update(raw_flood(stack.base_url, rate, args.duration, d / "raw_flood.json"))
        )
        flood.start()
        env = {"POPGATE_LT_SHAPE": "flood"}
        args.full_history = True
        result["locust_exit"] = run_locust(stack, d, args, env)
        flood.join(args.duration + 90)
        result["cpu"] = _cpu_report(cpu0, _cpu(pids), host0, _host())
        scraper.stop.set()
        scraper.join(10)
        last = scraper.sample()
        result["metrics"] = _shed(last["metrics"] if last else {})
        result["lag_ms"] = [(round(x["t"]), round(1000 * x.get("lag", 0.0), 1)) for x in scraper.samples]
        result["raw"] = got
        result["facilitator"] = _facilitator(stack.facilitator_url)
    finally:
        stack.close()
    result["summary"] = json.loads((d / "summary.json").read_text()) if (d / "summary.json").exists() else {}
    result["rows"] = class_rows(d)
    result["paid_success"] = paid_success(d)
    result["series"] = goodput_series(d / "locust_stats_history.csv")
    return result


def _tree(pid: int) -> list[int]:
    """pid and its children (the gateway's worker processes)."""
    out = [pid]
    try:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out.extend(_tree(int(child)))
    except OSError:
        pass
    return out


def _cpu(pids: list[int]) -> float:
    """CPU seconds (user + system) the processes used so far."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except (OSError, IndexError):
            pass
    return total


def _host() -> tuple[float, float, float]:
    """(wall time, busy CPU seconds, all CPU seconds) of the host from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]
    return time.monotonic(), (sum(f) - idle) / TICK, sum(f) / TICK


def _cpu_report(
    c0: float, c1: float, h0: tuple[float, float, float], h1: tuple[float, float, float]
) -> dict[str, float]:
    """The gateway's CPU share (of one core) and the host's busy share over the phase."""
    wall = max(h1[0] - h0[0], 1e-6)
    return {
        "gateway_cores": round((c1 - c0) / wall, 2),
        "host_busy": round((h1[1] - h0[1]) / max(h1[2] - h0[2], 1e-6), 2),
        "host_cores": os.cpu_count() or 0,
    }


def _facilitator(url: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(url + "/stats", timeout=5) as r:
            return dict(json.loads(r.read()))
    except OSError:
        return {}


def _shed(m: dict[str, list[tuple[dict[str, str], float]]]) -> dict[str, float]:
    return {labels.get("klass", ""): v for labels, v in m.get("popgate_shed_total", [])}


def goodput_series(path: Path) -> dict[str, list[tuple[float, float, float]]]:
    """Per user class: (seconds, successful requests/s, failed requests/s), from the full history."""
    if not path.exists():
        return {}
    totals: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    t0 = None
    for r in csv.DictReader(path.open()):
        name = r["Name"]
        if name == "Aggregated" or not r.get("Total Request Count"):
            continue
        ts = int(r["Timestamp"])
        t0 = ts if t0 is None else min(t0, ts)
        klass = name.split(" ", 1)[0]
        cell = totals[klass][ts]
        cell[0] += int(r["Total Request Count"])
        cell[1] += int(r["Total Failure Count"])
    out: dict[str, list[tuple[float, float, float]]] = {}
    for klass, by_t in totals.items():
        pts, prev = [], None
        for ts in sorted(by_t):
            req, fail = by_t[ts]
            if prev is not None and ts > prev[0]:
                dt = ts - prev[0]
                pts.append((ts - (t0 or ts), (req - fail - prev[1] + prev[2]) / dt, (fail - prev[2]) / dt))
            prev = (ts, req, fail)
        out[klass] = pts
    return out


def row(res: dict[str, Any], klass: str) -> dict[str, Any] | None:
    return next((r for r in res.get("rows", []) if r["class"] == klass), None)


def success(r: dict[str, Any] | None) -> float | None:
    return None if not r or not r["requests"] else 1 - r["failures"] / r["requests"]


def paid_success(d: Path) -> tuple[float | None, int]:
    """The paying agents' paid requests (credits, x402): the share that got through, and how many."""
    path = d / "locust_stats.csv"
    if not path.exists():
        return None, 0
    n = bad = 0
    for r in csv.DictReader(path.open()):
        if r["Name"].startswith("PayingAgent") and r["Name"].endswith((" credits", " x402")):
            n += int(r["Request Count"])
            bad += int(r["Failure Count"])
    return (1 - bad / n if n else None), n


def checks(res: dict[str, Any], capacity: float, factor: float) -> list[tuple[str, str, bool]]:
    human = row(res, "Human")
    s = res.get("summary") or {}
    raw = res.get("raw") or {}
    breaches = sum((s.get("breaches") or {}).values())
    hs, (ps, paid_n) = success(human), res.get("paid_success") or (None, 0)
    offered = raw.get("offered_rps", 0)
    return [
        (
            f"flood offered ≥ 3× capacity ({capacity:,.0f}/s)",
            f"{offered:,.0f}/s = {offered / max(capacity, 1):.1f}×",
            offered >= 3 * capacity * 0.95 and factor >= 3,
        ),
        (
            "session humans success ≥ 99 %",
            f"{hs:.2%}" if hs is not None else "—",
            hs is not None and hs >= 0.99,
        ),
        (
            "session humans p99 ≤ 250 ms",
            f"{human['p99']:.0f} ms" if human else "—",
            bool(human) and human["p99"] <= 250,
        ),
        (
            "paying agents' paid requests through ≥ 95 %",
            f"{ps:.2%} of {paid_n}" if ps is not None else "—",
            ps is not None and ps >= 0.95,
        ),
        ("successful attacks and charge errors = 0", str(breaches), breaches == 0 and bool(s)),
    ]


def plot(results: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, axes = plt.subplots(1, len(results), figsize=(7 * len(results), 4.5), sharey=True)
    for ax, res in zip(axes if len(results) > 1 else [axes], results, strict=True):
        for klass in (*PEOPLE, *AGENTS, "PuzzleBot"):
            pts = res.get("series", {}).get(klass)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=f"{klass} ok/s")
                bad = [p[2] for p in pts]
                if any(bad):
                    ax.plot([p[0] for p in pts], bad, linestyle=":", label=f"{klass} failed/s")
        ax.set_title(res["name"])
        ax.set_xlabel("seconds")
        ax2 = ax.twinx()
        series = (res.get("raw") or {}).get("series") or {}
        ts = sorted(int(t) for t in series)
        for code, color in (("402", "0.55"), ("503", "tab:red")):
            ys = [series[str(t)].get(code, 0) for t in ts]
            if any(ys):
                ax2.plot(ts, ys, color=color, linewidth=0.8, label=f"raw flood {code}/s")
        ax2.set_ylabel("raw flood answers/s")
        lines = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
        labels = ax.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
        ax.legend(lines, labels, loc="upper left", fontsize="x-small")
    axes_list = axes if len(results) > 1 else [axes]
    axes_list[0].set_ylabel("locust users' successful requests/s")
    fig.suptitle("goodput per class under a flood beyond capacity")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _cpu_cell(res: dict[str, Any]) -> str:
    raw, cpu = res.get("raw") or {}, res.get("cpu") or {}
    busy = cpu.get("host_busy")
    host = f"{busy:.0%} of {cpu.get('host_cores')}" if busy is not None else "?"
    return f"{raw.get('cpu_share', '?')}, {cpu.get('gateway_cores', '?')}, {host}"


def report(args: argparse.Namespace, capacity: float, rate: float, results: list[dict[str, Any]]) -> str:
    L = [
        "# popgate beyond capacity: admission control off and on",
        "",
        f"popgate workers: {args.workers}; locust: {args.users} users (shape `flood`), "
        f"{args.processes} process(es); store `{args.store}`; {args.duration} s per phase; all on 127.0.0.1.",
        "Capacity (popgate answering the raw flood's requests, admission off, "
        f"{CALIBRATE:g} s at saturation): "
        f"**{capacity:,.0f} requests/s**. Raw flood offered: **{rate:,.0f}/s** ({args.factor:g}×), "
        "open loop (loadtests/raw_flood.py), on top of locust.",
        "",
        "## Per class",
        "",
        "| class | " + " | ".join(f"{r['name']}: success, p50 / p99 ms" for r in results) + " |",
        "|---|" + "---|" * len(results),
    ]
    names = [r["class"] for r in results[-1].get("rows", [])]
    for klass in names:
        cells = []
        for res in results:
            r = row(res, klass)
            ok = success(r)
            cells.append(f"{ok:.2%}, {r['p50']:.0f} / {r['p99']:.0f}" if r and ok is not None else "—")
        L.append(f"| {klass} | " + " | ".join(cells) + " |")
    L += [
        "",
        "## The raw flood",
        "",
        "| phase | offered/s | answered/s | held back | status | p50 / p99 ms "
        "| CPU (cores): driver, popgate, host busy |",
    ]
    L.append("|---|---|---|---|---|---|---|")
    for res in results:
        raw = res.get("raw") or {}
        L.append(
            f"| {res['name']} | {raw.get('offered_rps', 0):,} | {raw.get('answered_rps', 0):,} | "
            f"{raw.get('held_back', 0):,} | {raw.get('status', {})} | "
            f"{raw.get('p50_ms')} / {raw.get('p99_ms')} | {_cpu_cell(res)} |"
        )
    L += [
        "",
        "Shed by popgate (popgate_shed_total): "
        + "; ".join(f"{r['name']}: {r.get('metrics') or 'none (off)'}" for r in results),
        "",
    ]
    for res in results:
        s = res.get("summary") or {}
        fac = res.get("facilitator") or {}
        L += [
            f"## Acceptance — {res['name']} (locust exit {res.get('locust_exit')})",
            "",
            "| check | measured | met |",
            "|---|---|---|",
            *(
                f"| {c} | {m} | {'yes' if ok else '**no**'} |"
                for c, m, ok in checks(res, capacity, args.factor)
            ),
            "",
            f"Fees: requests paid through {s.get('paid', {})}; facilitator settled {fac.get('settled', '?')} "
            f"x402 payments; credit balances checked by the gate (a mismatch is a breach). "
            f"Gate problems: {s.get('problems') or 'none'}.",
            "",
        ]
    L += ["![goodput per class](goodput.png)", ""]
    return "\n".join(L)


def main(args: argparse.Namespace) -> int:
    out = Path(args.out).resolve() / "overload"
    out.mkdir(parents=True, exist_ok=True)
    print(f"overload: measuring capacity ({CALIBRATE:g} s at saturation, admission off) ...", flush=True)
    capacity = float(phase("calibrate", OFF, args, out, None)["capacity"])
    rate = capacity * args.factor
    results = []
    for name, extra in (("admission off", OFF), ("admission on", "")):
        print(f"overload: {name}: {args.duration} s, raw flood {rate:,.0f}/s + locust", flush=True)
        results.append(phase(name, extra, args, out, rate))
    plot(results, out / "goodput.png")
    text = report(args, capacity, rate, results)
    (out / "OVERLOAD.md").write_text(text)
    (out / "overload.json").write_text(
        json.dumps([{k: v for k, v in r.items() if k != "series"} for r in results], default=str)
    )
    print(text)
    ok = all(met for _c, _m, met in checks(results[-1], capacity, args.factor))
    print(f"overload: report in {out / 'OVERLOAD.md'}; acceptance {'met' if ok else 'NOT met'}")
    return 0 if ok else 1
