"""Edge proxies for the forward-auth tests, run for real on loopback: nginx and
Caddy with the shipped configs, popgate in auth mode and an inline popgate with
the same keys as the reference. Each process is ended by the pid we started."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from popgate.gateway.http.forward_auth import AUTH_PATH
from popgate.gateway.http.server import Running
from popgate.gateway.ops.config import load_config
from tests.gateway.schemes.puzzle_support import puzzle_extra
from tests.support.servers import ROOT, free_port, wait_port, write_config

NGINX_CONF = ROOT / "deploy" / "forward-auth" / "nginx-popgate-auth.conf"
CADDYFILE = ROOT / "deploy" / "forward-auth" / "Caddyfile"
UA = {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/124.0 Safari/537.36"}


def _pointed(text: str, replacements: tuple[tuple[str, str], ...]) -> str:
    for old, new in replacements:
        assert text.count(old) >= 1, f"the shipped config should say {old!r}"
        text = text.replace(old, new)
    return text


@contextlib.contextmanager
def _run(cmd: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    try:
        wait_port(port, proc=proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def nginx(
    tmp: Path,
    listen: int,
    popgate: int,
    origin: int,
    *,
    cache: bool = True,
    auth: int | None = None,
    floor: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Real nginx running the shipped config, its addresses pointed at the test's ports
    (``cache=False``: the verdict cache turned off; ``auth``: popgate's auth listener,
    by default its main port, which answers auth calls too; ``floor``: the auth location
    answers 200 itself, asking nobody: what ``auth_request`` costs nginx at the least)."""
    conf = _pointed(
        NGINX_CONF.read_text(),
        (
            ("server 127.0.0.1:8080;", f"server 127.0.0.1:{popgate};"),
            ("server 127.0.0.1:8081;", f"server 127.0.0.1:{auth or popgate};"),
            ("server 127.0.0.1:8000;", f"server 127.0.0.1:{origin};"),
            ("listen 80;", f"listen 127.0.0.1:{listen};"),
            ("/var/cache/nginx/popgate", str(tmp / "nginx" / "verdicts")),
            *((("proxy_cache $popgate_verdict_cache;", "proxy_cache off;"),) if not cache else ()),
            *(((f"proxy_pass http://popgate_auth{AUTH_PATH};", "return 200;"),) if floor else ()),
        ),
    )
    d = tmp / "nginx"
    d.mkdir()
    (d / "nginx-popgate-auth.conf").write_text(conf)
    temps = " ".join(
        f"{kind}_temp_path {d}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # as root, workers would run as nobody: unable to reach the verdict cache under the test's tmp dir
    user = "user root;\n" if os.geteuid() == 0 else ""
    (d / "nginx.conf").write_text(
        f"{user}worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log warn;\n"
        "events { worker_connections 256; }\n"
        f"http {{ access_log off; {temps}\n  include {d}/nginx-popgate-auth.conf;\n}}\n"
    )
    with _run(["nginx", "-p", str(d), "-c", str(d / "nginx.conf"), "-g", "daemon off;"], listen) as proc:
        yield proc


@contextlib.contextmanager
def caddy(
    tmp: Path, listen: int, popgate: int, origin: int, *, auth: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Real Caddy running the shipped Caddyfile, its addresses pointed at the test's ports
    (``auth``: popgate's auth listener, by default its main port)."""
    conf = _pointed(
        CADDYFILE.read_text(),
        (
            ("127.0.0.1:8080", f"127.0.0.1:{popgate}"),
            ("127.0.0.1:8081", f"127.0.0.1:{auth or popgate}"),
            ("127.0.0.1:8000", f"127.0.0.1:{origin}"),
            (":80 {", f":{listen} {{\n\tbind 127.0.0.1"),
        ),
    )
    d = tmp / "caddy"
    d.mkdir()
    (d / "Caddyfile").write_text(conf)
    env = {**os.environ, "HOME": str(d), "XDG_DATA_HOME": str(d / "data"), "XDG_CONFIG_HOME": str(d / "cfg")}
    cmd = ["caddy", "run", "--config", str(d / "Caddyfile"), "--adapter", "caddyfile"]
    with _run(cmd, listen, env) as proc:
        yield proc


@dataclass
class Pair:
    auth: Running  # popgate, mode = "auth"
    inline: Running  # popgate inline in front of the same origin, same keys: the reference

    @property
    def auth_port(self) -> int:
        return int(self.auth.proxy.addresses[0][1])

    @property
    def listener_port(self) -> int:
        """The auth-mode popgate's forward-auth listener ([server] auth_listen)."""
        assert self.auth.auth is not None
        return int(self.auth.auth.addresses[0][1])


async def popgate_pair(tmp: Path, upstream: str, factory: Any) -> Pair:
    """popgate in auth mode and inline, sharing session and puzzle keys and the test policy."""
    inline_path = write_config(
        tmp, upstream, extra=puzzle_extra(tmp), server_extra='trusted_proxies = ["127.0.0.1/32"]'
    )
    inline = await factory(upstream, config=load_config(inline_path))
    for attempt in range(3):  # free_port() only picks ports: another socket may take one first
        text = inline_path.read_text()
        text = re.sub(r'listen = "127\.0\.0\.1:\d+"', f'listen = "127.0.0.1:{free_port()}"', text)
        text = re.sub(r'upstream = "[^"]*"', f'mode = "auth"\nauth_listen = "127.0.0.1:{free_port()}"', text)
        text = re.sub(r'admin = "127\.0\.0\.1:\d+"', f'admin = "127.0.0.1:{free_port()}"', text)
        auth_path = tmp / "auth.toml"
        auth_path.write_text(text)
        try:
            auth = await factory("", config=load_config(auth_path))
            break
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == 2:
                raise
    return Pair(auth, inline)


def masked(status: int, headers: Any, body: bytes) -> tuple[object, ...]:
    """What a client reads from a refusal, with the puzzle's fresh nonce and expiry masked."""
    h = dict(headers)
    fresh = re.compile(r"pz1\.[\w.-]+|(?<=expires=)\d+|(?<=\"expires\":)\d+")
    keep = ("Content-Type", "WWW-Authenticate", "Cache-Control", "Retry-After", "PAYMENT-REQUIRED")
    return status, {k: fresh.sub("0", h[k]) for k in keep if k in h}, fresh.sub("0", body.decode())
