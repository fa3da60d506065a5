"""Forward-auth floor: what nginx's ``auth_request`` costs with the cheapest auth servers
behind it, beside popgate. Answers "how far can popgate's side go?" with measurements.

Starts on loopback a static origin (nginx), nginx proxy_pass (the reference), and four
nginx running the shipped deploy/forward-auth/nginx-popgate-auth.conf with the verdict
cache off, each asking a different auth server:

- ``nginx stub``: a second nginx answering every auth call ``200`` with the PoP headers
  from ``return`` (no decision at all: the C floor of one auth exchange);
- ``python stub``: a minimal asyncio protocol (uvloop, httptools' parser, keep-alive)
  answering the same fixed ``200`` (the floor of any Python auth listener, no pipeline);
- ``popgate (aiohttp port)``: popgate in ``mode = "auth"`` deciding for a session holder on its
  main port (aiohttp's server);
- ``popgate (auth listener)``: the same popgate on its forward-auth listener
  (``[server] auth_listen``, gateway/http/auth_listener.py).

And nginx answering its own auth call (``return 200`` in the auth location, asking nobody):
the least ``auth_request`` costs, the best a verdict-cache hit can do.

And the floor of a refusal: an anonymous client answered 402 through the edge by the Python stub
replaying popgate's own auth answer for it (the 401 carrying the 402, captured once from popgate),
beside popgate inline answering the same 402 itself: what the nginx pattern costs before popgate
decides anything.

wrk drives each case in turn, alternating, every round; CPU µs per request summed over
the edge nginx (master + worker) and the auth server, then each part apart.

    python tests/bench/bench_forward_auth_floor.py [--seconds 3] [--rounds 5] [--conns 32]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.bench.bench_forward_auth import popgate
from tests.bench.bench_proxy import session_token
from tests.bench.harness import PY, cpu_seconds, free_port, nginx, start, tree, wait_port, wrk
from tests.support.edges import nginx as nginx_edge

PY_STUB = r"""
import asyncio, sys
import httptools, uvloop

ANSWER = (b"HTTP/1.1 200 OK\r\nPoP-Class: human\r\nPoP-Subject: bench\r\nPoP-Evidence: session\r\n"
          b"X-Accel-Expires: 0\r\nContent-Length: 0\r\n\r\n")
if len(sys.argv) > 2:
    ANSWER = open(sys.argv[2], "rb").read()

class Auth(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data):
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_message_complete(self):
        self.transport.write(ANSWER)

async def main(port):
    server = await asyncio.get_running_loop().create_server(Auth, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()

uvloop.run(main(int(sys.argv[1])))
"""


REFUSAL_FLOOR = "402: edge + python stub replaying popgate's answer"
INLINE402 = "402: popgate inline"
SELF_AUTH = "edge answering its own auth call"  # auth_request's floor: what a verdict-cache hit costs at best


def refusal(port: int) -> bytes:
    """popgate's answer to nginx's auth subrequest for an anonymous client (the 401 that
    carries the 402), as bytes a stub can replay."""
    request = (
        "GET /.well-known/popgate/auth HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Popgate-Auth: subrequest\r\n"
        "X-Forwarded-Method: GET\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: 127.0.0.1\r\n"
        "X-Forwarded-Uri: /bench\r\nX-Forwarded-For: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(request.encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401") and b"X-Popgate-Status: 402" in head, head[:200]
    return head.replace(b"Connection: close", b"Connection: keep-alive") + b"\r\n\r\n" + body


def nginx_stub(d: Path, port: int) -> subprocess.Popen[bytes]:
    """nginx answering every auth call 200 with the identity headers (no decision)."""
    d.mkdir()
    (d / "nginx.conf").write_text(
        f"daemon off; worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n"
        "events { worker_connections 1024; }\n"
        "http { access_log off; server { listen 127.0.0.1:%d; location / {\n"
        "  add_header PoP-Class human; add_header PoP-Subject bench; add_header PoP-Evidence session;\n"
        '  add_header X-Accel-Expires 0; return 200 ""; } } }\n' % port
    )
    return start(["nginx", "-c", f"{d}/nginx.conf", "-p", str(d)], port)


def section(seconds: int, rounds: int, conns: int) -> list[str]:
    """Run every case; the markdown section for loadtests/BENCHMARKS.md."""
    tmp = Path(tempfile.mkdtemp(prefix="pg-fa-floor-"))
    keyfile = str(tmp / "k1")
    Path(keyfile).write_bytes(os.urandom(32).hex().encode())
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up = free_port()
        procs.append(nginx(up, body="hello from the origin")[0])
        ref = free_port()
        procs.append(nginx(ref, upstream=up)[0])
        stub_port, py_port, py402_port, lean = free_port(), free_port(), free_port(), free_port()
        procs.append(nginx_stub(tmp / "stub", stub_port))
        (tmp / "py.py").write_text(PY_STUB)
        procs.append(start([PY, str(tmp / "py.py"), str(py_port)], py_port))
        auth_port, cmd = popgate(
            str(tmp),
            "auth",
            keyfile,
            f'mode = "auth"\ntrusted_proxies = ["127.0.0.1/32"]\nauth_listen = "127.0.0.1:{lean}"',
        )
        procs.append(start(cmd, auth_port))
        wait_port(lean)
        (tmp / "402.http").write_bytes(refusal(lean))
        procs.append(start([PY, str(tmp / "py.py"), str(py402_port), str(tmp / "402.http")], py402_port))
        inline_port, cmd = popgate(str(tmp), "inline", keyfile, f'upstream = "http://127.0.0.1:{up}"')
        procs.append(start(cmd, inline_port))
        session = {"Authorization": f"PoP {session_token(keyfile)}"}
        with contextlib.ExitStack() as stack:
            cases: list[tuple[str, int, list[int], list[int], dict[str, str]]] = [
                ("nginx proxy_pass", ref, tree(procs[1].pid), [], {})
            ]
            for name, auth, proc, headers in (
                ("edge + nginx stub", stub_port, procs[2], session),
                ("edge + python stub", py_port, procs[3], session),
                ("edge + popgate (aiohttp port)", auth_port, procs[4], session),
                ("edge + popgate (auth listener)", lean, procs[4], session),
                (REFUSAL_FLOOR, py402_port, procs[5], {}),
            ):
                port = free_port()
                (tmp / name.replace(" ", "_")).mkdir()
                edge = stack.enter_context(
                    nginx_edge(tmp / name.replace(" ", "_"), port, auth, up, cache=False, auth=auth)
                )
                cases.append((name, port, tree(edge.pid), tree(proc.pid), headers))
            port = free_port()
            (tmp / "self").mkdir()
            edge = stack.enter_context(nginx_edge(tmp / "self", port, auth_port, up, floor=True))
            cases.append((SELF_AUTH, port, tree(edge.pid), [], session))
            cases.append((INLINE402, inline_port, [], tree(procs[6].pid), {}))
            runs: dict[str, list[tuple[float, float]]] = {c[0]: [] for c in cases}
            for _ in range(rounds):
                for name, port, edge_pids, auth_pids, headers in cases:
                    url = f"http://127.0.0.1:{port}/bench"
                    before = cpu_seconds(auth_pids)
                    total = wrk(
                        name,
                        url,
                        [*edge_pids, *auth_pids],
                        seconds=seconds,
                        conns=conns,
                        headers=headers,
                    )
                    part = (cpu_seconds(auth_pids) - before) / max(total.rps * seconds, 1) * 1e6
                    runs[name].append((total.cpu_us, part))
                    print(f"  {name:24s} {total.rps:>9,.0f} req/s {total.cpu_us:6.1f} µs/req", flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)
        shutil.rmtree(tmp, ignore_errors=True)
    return report(runs, seconds, rounds, conns)


def report(runs: dict[str, list[tuple[float, float]]], seconds: int, rounds: int, conns: int) -> list[str]:
    ref_us = [t for t, _ in runs["nginx proxy_pass"]]
    lines = [
        "### Forward-auth floor: what `auth_request` costs with the cheapest auth servers",
        "",
        f"`python tests/bench/bench_forward_auth_floor.py --seconds {seconds} --rounds {rounds} "
        f"--conns {conns}`: the shipped nginx config, verdict cache off, a session holder; the auth "
        "server is a second nginx answering a fixed 200 (`nginx stub`), a minimal Python listener "
        "(uvloop + httptools, keep-alive, fixed 200: `python stub`), or popgate (on its aiohttp port, "
        "and on its forward-auth listener). The last two rows are an anonymous client's 402: through "
        "the edge with the Python stub replaying popgate's own auth answer for it (no decision at all), "
        "and popgate inline deciding it. `edge answering its own auth call`: the shipped config with "
        "its auth location answering 200 itself (`return 200`, asking nobody): the least an "
        "`auth_request` costs nginx, so the best a verdict-cache hit can do. CPU µs per request over "
        "the edge nginx and the auth server, median [min–max] over the rounds.",
        "",
        "| case (cache off) | CPU µs/req, total | auth server's share | × nginx proxy_pass per core |",
        "|---|---|---|---|",
    ]
    for name, rs in runs.items():
        tot = [t for t, _ in rs]
        share = [s for _, s in rs]
        ratio = [r / t for r, t in zip(ref_us, tot, strict=True)]
        lines.append(
            f"| {name} | {statistics.median(tot):.0f} [{min(tot):.0f}–{max(tot):.0f}] "
            f"| {statistics.median(share):.0f} [{min(share):.0f}–{max(share):.0f}] "
            f"| {statistics.median(ratio):.2f}× [{min(ratio):.2f}–{max(ratio):.2f}] |"
        )
    return [*lines, ""]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--conns", type=int, default=32)
    args = ap.parse_args()
    print("\n".join(section(args.seconds, args.rounds, args.conns)))


if __name__ == "__main__":
    main()
