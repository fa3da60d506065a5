"""What logs and traces cost on the hot path (a request with a valid session), side by side.

    python tests/bench/bench_observe.py [--seconds 5] [--rounds 3] [--conns 32]

One origin (nginx static, or the demo upstream), and popgate four times over on loopback:

- ``before``: the code before this feature (``--baseline REV``, default the merge base with
  ``main``; checked out with ``git archive`` into a temporary tree and run from there);
- ``off``: this code, no access log, no tracing (the default); ``off-no-crawlers``: the
  same with ``[crawlers] enabled = false`` (what recognizing crawler User-Agents costs);
- ``access-json``: ``[log] format = "json"``, ``access = true`` (lines to a file);
- ``tracing``: ``[tracing]`` on, every request sampled, spans exported over OTLP/HTTP to
  a local sink that answers 200; ``tracing-10%``: the same with ``sample_ratio = 0.1``.

Rounds alternate between the cases, each round led by another case; each keeps its best round.
Prints req/s, latency, CPU
µs per request of the gateway process and the ratios to ``off`` and ``before``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from aiohttp import web

from tests.bench.bench_proxy import session_token
from tests.bench.harness import PY, ROOT, Result, free_port, nginx, start, table, tree, wrk
from tests.support.servers import wait_port

CASES = {
    "off": "",
    "off-no-crawlers": "[crawlers]\nenabled = false\n",
    "access-json": '[log]\nformat = "json"\naccess = true\n',
    "tracing": '[tracing]\nendpoint = "http://127.0.0.1:{sink}/v1/traces"\n',
    "tracing-10%": '[tracing]\nendpoint = "http://127.0.0.1:{sink}/v1/traces"\nsample_ratio = 0.1\n',
}


def otlp_sink(port: int) -> None:
    """An OTLP/HTTP endpoint that takes every export (in a thread of this process)."""

    async def take(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def run() -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", take)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    threading.Thread(target=lambda: asyncio.run(run()), daemon=True).start()


def baseline_tree(rev: str, tmp: str) -> str | None:
    """The code at ``rev`` as an importable ``popgate`` tree (None when git cannot give it)."""
    try:
        base = subprocess.run(
            ["git", "merge-base", "HEAD", rev] if rev == "main" else ["git", "rev-parse", rev],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        src = Path(tmp, "before-src")
        src.mkdir()
        archive = subprocess.run(["git", "archive", base], cwd=ROOT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        print(f"(no baseline: {exc})")
        return None
    pkg = Path(tmp, "before", "popgate")
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for name in ("gateway", "verifiers", "policies"):
        (pkg / name).symlink_to(src / name)
    return str(pkg.parent)


def config(tmp: str, name: str, port: int, origin: str, keyfile: str, extra: str) -> str:
    path = Path(tmp, f"{name}.toml")
    path.write_text(
        f"""
[server]
listen = "127.0.0.1:{port}"
admin = "127.0.0.1:{free_port()}"
upstream = "{origin}"
[store]
url = "memory://"
[sessions]
keys = [{{kid = "k1", secret_file = "{keyfile}"}}]
{extra}"""
    )
    return str(path)


def gateway(cfg: str, port: int, log: Path, pythonpath: str | None = None) -> subprocess.Popen[bytes]:
    env = {**os.environ}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    args = [PY, "-m", "popgate.gateway", "run", "--config", cfg]
    with open(log, "wb") as out:
        proc = subprocess.Popen(args, cwd=pythonpath or ROOT, env=env, stderr=out)
    wait_port(port, proc=proc)
    return proc


def imports_from(pythonpath: str) -> str:
    """Where ``popgate.gateway`` comes from with ``pythonpath`` first (checks the baseline)."""
    code = "import popgate.gateway.app as a; print(a.__file__)"
    env = {**os.environ, "PYTHONPATH": pythonpath}
    return subprocess.run([PY, "-c", code], cwd=pythonpath, env=env, capture_output=True, text=True).stdout


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=32)
    ap.add_argument("--baseline", default="main", help="git revision of the 'before' case (merge base)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="pg-bench-observe-")
    keyfile = os.path.join(tmp, "k1")
    Path(keyfile).write_bytes(os.urandom(32).hex().encode())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up = free_port()
        if shutil.which("nginx"):
            procs.append(nginx(up, body="hello from the origin")[0])
        else:
            procs.append(
                start([PY, "-m", "popgate.gateway", "demo-upstream", "--listen", f"127.0.0.1:{up}"], up)
            )
        origin = f"http://127.0.0.1:{up}"
        sink = free_port()
        otlp_sink(sink)
        cases: list[tuple[str, int, int]] = []
        before = baseline_tree(args.baseline, tmp)
        if before is not None:
            where = imports_from(before).strip()
            if not where.startswith(before) and "before-src" not in where:
                raise SystemExit(f"the baseline imports popgate from {where!r}, not from {before}")
            print(f"before: popgate.gateway from {where}")
            port = free_port()
            p = gateway(
                config(tmp, "before", port, origin, keyfile, ""), port, Path(tmp, "before.log"), before
            )
            procs.append(p)
            cases.append(("before", port, p.pid))
        for name, extra in CASES.items():
            port = free_port()
            cfg = config(tmp, name, port, origin, keyfile, extra.format(sink=sink))
            p = gateway(cfg, port, Path(tmp, f"{name}.log"))
            procs.append(p)
            cases.append((name, port, p.pid))
        headers = {"Authorization": f"PoP {session_token(keyfile)}", "User-Agent": "bench/1.0"}
        runs: dict[str, list[Result]] = {c[0]: [] for c in cases}
        for i in range(args.rounds):
            for name, port, pid in cases[i % len(cases) :] + cases[: i % len(cases)]:  # each leads once
                url = f"http://127.0.0.1:{port}/bench"
                runs[name].append(
                    wrk(name, url, tree(pid), seconds=args.seconds, conns=args.conns, headers=headers)
                )
        best = [max(rs, key=lambda r: r.rps) for rs in runs.values()]
        print(
            f"\nobservability cost: {args.rounds} rounds × {args.seconds}s, {args.conns} connections, "
            "one worker each, session holders; best round per case\n"
        )
        print(table(best, "off", "before" if before else None))
        b = {r.name: r for r in best}
        off = b["off"].cpu_us
        for name in ("before", "off-no-crawlers", "access-json", "tracing", "tracing-10%"):
            if name in b:
                print(f"CPU µs/request {name} / off = {b[name].cpu_us / off:.2f}")
        lines = Path(tmp, "access-json.log").read_text().count('"logger":"popgate.access"')
        print(f"access lines written: {lines:,}")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
