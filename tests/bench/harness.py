"""Shared pieces of the benchmark scripts: free ports, processes, wrk runs,
CPU time per request read from /proc. Benchmarks are scripts, not tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.support.servers import free_port, wait_port  # noqa: F401 - re-exported for the bench scripts

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICK
        except (FileNotFoundError, IndexError):
            pass
    return total


def tree(pid: int) -> list[int]:
    """pid and its children (worker processes)."""
    out = [pid]
    try:
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out.extend(tree(int(child)))
    except FileNotFoundError:
        pass
    return out


def peak_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def machine_ticks() -> tuple[int, int]:
    """(all, idle + iowait) CPU ticks of the whole machine, from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    cpu_us: float
    non2xx: int
    idle_pct: float = -1.0  # the machine's idle CPU during the run: 0 = saturated

    @property
    def cores(self) -> float:
        """CPU cores the measured processes used."""
        return self.cpu_us * self.rps / 1e6


def wrk(name: str, url: str, pids: list[int], *, seconds: int, conns: int, headers: dict[str, str]) -> Result:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `make bench-deps` installs it (apt: wrk, nginx-light)")
    args = ["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "--latency"]
    for k, v in headers.items():
        args += ["-H", f"{k}: {v}"]
    before, ticks = cpu_seconds(pids), machine_ticks()
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pids) - before
    after = machine_ticks()
    idle = 100 * (after[1] - ticks[1]) / max(after[0] - ticks[0], 1)
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)

    def lat(label: str) -> float:
        m = re.search(rf"{label}%\s+([\d.]+)(us|ms|s)", out)
        v, unit = float(m.group(1)), m.group(2)
        return v / 1000 if unit == "us" else v * 1000 if unit == "s" else v

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    return Result(
        name,
        rps,
        lat("50"),
        lat("99"),
        cpu / max(total, 1) * 1e6,
        int(non2xx.group(1)) if non2xx else 0,
        idle,
    )


def revision_env(rev: str, tmp: str | Path) -> dict[str, str]:
    """The environment that runs popgate as it was at git revision ``rev`` (``git archive``
    into ``tmp``): for benchmarks of old code beside new, in the same run."""
    src = Path(tmp, "base", "popgate")
    src.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=ROOT, check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    return {"PYTHONPATH": str(src.parent)}


def start(args: list[str], port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc


def nginx(
    port: int, body: str | None = None, upstream: int | None = None
) -> tuple[subprocess.Popen[bytes], str]:
    """nginx as a static origin (``body``) or as a proxy_pass reference."""
    if shutil.which("nginx") is None:
        raise RuntimeError("nginx not installed: apt-get install nginx-light")
    d = tempfile.mkdtemp(prefix="pg-nginx-")
    loc = (
        f'return 200 "{body}";'
        if body is not None
        else (
            f'proxy_pass http://127.0.0.1:{upstream}; proxy_http_version 1.1; proxy_set_header Connection "";'
        )
    )
    ups = ""
    conf = f"""daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;
events {{ worker_connections 1024; }}
http {{ access_log off; {ups}
  server {{ listen 127.0.0.1:{port}; location / {{ {loc} }} }} }}"""
    if upstream is not None:
        conf = conf.replace(f"proxy_pass http://127.0.0.1:{upstream};", "proxy_pass http://up;")
        conf = conf.replace(
            "http { access_log off; ",
            f"http {{ access_log off; upstream up {{ server 127.0.0.1:{upstream}; keepalive 64; }} ",
        )
    Path(d, "nginx.conf").write_text(conf)
    return start(["nginx", "-c", f"{d}/nginx.conf", "-p", d], port), d


def table(results: list[Result], base: str, ref: str | None = None) -> str:
    b = next(r for r in results if r.name == base)
    n = next((r for r in results if r.name == ref), None) if ref else None
    head = (
        "| case | req/s | p50 ms | p99 ms | CPU µs/req | cores used | machine idle | × "
        + base
        + (f" | × {ref}" if n else "")
        + " | non-2xx |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        row = (
            f"| {r.name} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.cpu_us:.0f} | {r.cores:.2f} | "
            f"{r.idle_pct:.0f} % | {r.rps / b.rps:.2f}"
        )
        if n:
            row += f" | {r.rps / n.rps:.2f}"
        lines.append(row + f" | {r.non2xx} |")
    return "\n".join(lines)
