"""The soak's report: ``SOAK.md`` (verdict, one row per fitted series, key prefixes) and
``soak.png`` (RSS and fds per worker, store keys, p99 and users over time)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from loadtests.soak_verdict import Limits, Verdict, bin_p99, prefix_series


def _fmt(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{x:,.{digits}f}"


def markdown(v: Verdict, meta: dict[str, Any], samples: list[dict[str, Any]], plotted: bool) -> str:
    lines = [
        f"# popgate soak — {'PASSED' if v.passed else 'FAILED'}",
        "",
        f"{meta['duration']:.0f} s of the `flood` shape ({meta['users']} users, every class incl. the "
        f"attackers), {meta['workers']} gateway workers, store `{meta['store']}`; a sample every "
        f"{meta['interval']:g} s ({len(samples)} samples). Slopes are Theil–Sen fits over the second "
        f"half ({meta['duration'] / 2:.0f}–{meta['duration']:.0f} s; a TTL-bounded key prefix from one TTL "
        "after the start, its counts scaled to the final request rate); a check fails above its limit "
        f"or with fewer than {meta['min_points']} points. Locust's gate exited {meta['locust_exit']}"
        f" ({meta['requests']} requests, {meta['failures']} unexpected).",
        "",
    ]
    if v.problems:
        lines += ["**Problems:**", ""] + [f"- {p}" for p in v.problems] + [""]
    lines += [
        "| series | start → end | slope / min (2nd half) | limit / min | points | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for c in v.checks:
        lines.append(
            f"| {c.name} | {_fmt(c.start)} → {_fmt(c.end)} {c.unit} | {_fmt(c.slope, 2)} | "
            f"{c.limit:g} | {c.points} | {'ok' if c.passed else '**FAIL**'} |"
        )
    lines += [""] + [f"- {n}" for n in v.notes]
    last = next((s["keys"] for s in reversed(samples) if "keys" in s), None)
    if last and last.get("ttl") is not None:
        lines += [
            "",
            f"## Store keys at the end (DBSIZE {last['dbsize']})",
            "",
            "| prefix | with TTL | longest TTL left (s) | without TTL | durable |",
            "|---|---|---|---|---|",
        ]
        kinds = sorted(set(last["ttl"]) | set(last["persistent"]))
        for k in kinds:
            lines.append(
                f"| `{k}` | {last['ttl'].get(k, 0)} | {_fmt(last['max_ttl'].get(k), 0)} | "
                f"{last['persistent'].get(k, 0)} | {'yes' if k in meta['durable'] else ''} |"
            )
    if plotted:
        lines += ["", "![RSS, fds, keys and p99 over the soak](soak.png)"]
    lines += [
        "",
        "Files: `soak.json` (every sample), `locust_stats_history.csv`, `stack/` (config, logs).",
        "",
    ]
    return "\n".join(lines)


def plot(
    samples: list[dict[str, Any]], p99: list[tuple[float, ...]], meta: dict[str, Any], path: Path
) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    if len(samples) < 2:
        return False
    fig, axes = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    rss, fds, keys, lat = axes
    pids = sorted({pid for s in samples for pid in s["workers"]}, key=int)
    for pid in pids:
        rows = [(s["t"], s["workers"][pid]) for s in samples if pid in s["workers"]]
        rss.plot([t for t, _ in rows], [w["rss_mb"] for _, w in rows], label=f"worker {pid}")
        fds.plot([t for t, _ in rows], [w["fds"] for _, w in rows], label=f"worker {pid}")
    rss.set_ylabel("RSS (MiB)")
    fds.set_ylabel("open fds")
    keyed = [s for s in samples if "keys" in s]
    if keyed:
        keys.plot([s["t"] for s in keyed], [s["keys"]["dbsize"] for s in keyed], color="0.3", label="DBSIZE")
        series = prefix_series(samples, Limits(durable=tuple(meta["durable"])))
        keys.plot(
            *zip(*series["durable"], strict=True), color="tab:blue", label="durable (receipts, balances)"
        )
        keys.plot(*zip(*series["persistent"], strict=True), color="tab:red", label="no TTL, not durable")
        for kind, rows in series["ttl"].items():
            keys.plot(*zip(*rows, strict=True), lw=0.9, label=f"{kind} (TTL {series['max_ttl'][kind]:.0f} s)")
    keys.set_ylabel("store keys")
    binned = bin_p99(p99, meta["interval"])
    if binned:
        lat.plot(*zip(*binned, strict=True), color="tab:purple", label=f"p99 per {meta['interval']:g} s")
        users = lat.twinx()
        users.plot([r[0] for r in p99], [r[2] for r in p99], color="0.7", lw=0.8)
        users.set_ylabel("users (grey)", color="0.5")
        users.set_ylim(0, max(r[2] for r in p99) * 1.2 + 1)
    lat.set_ylabel("p99 (ms)")
    lat.set_xlabel("seconds since the load started")
    for ax in axes:
        ax.axvspan(meta["duration"] / 2, meta["duration"], color="0.5", alpha=0.12, lw=0)
        ax.legend(loc="upper left", fontsize="x-small", ncol=2)
    axes[0].set_title(f"popgate soak: {meta['workers']} workers, {meta['users']} users (shaded: fitted half)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
