"""Start-up checks shared by ``popgate run``, ``check`` and ``explain``.

Every problem found before serving is reported as one line with its key path
and the fix, and the command exits with status 2: the configuration and policy
file (every problem at once), a challenge that offers some class no way out,
a port already in use or not ours to take, a store directory we cannot write.
Never a traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from popgate.gateway.ops.config import Config, ConfigError, HostPort, load_config
from popgate.gateway.ops.deadends import dead_ends

log = logging.getLogger("popgate")
USAGE_ERROR = 2


class StartupError(Exception):
    """A start-up problem: ``lines`` are printed as is, one problem each."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("\n".join(lines))


def report(exc: StartupError, prog: str = "popgate") -> int:
    """Print the problems on stderr; return the exit status (2)."""
    print(f"{prog}: " + "\n  ".join(exc.lines), file=sys.stderr)
    return USAGE_ERROR


def configure(path: str | None, overrides: dict[str, Any] | None = None) -> tuple[Config, list[str]]:
    """Load and validate the configuration and its policy; refuse dead ends.

    Returns the config and the warnings to show (``ways = []`` set on purpose).
    """
    try:
        config = load_config(path, overrides)
    except ConfigError as exc:
        raise StartupError(["invalid configuration:", *exc.problems]) from None
    errors, warnings = dead_ends(config)
    if errors:
        raise StartupError(["a challenge offers no way out (nobody of that class could get in):", *errors])
    return config, warnings


def check_listeners(config: Config) -> None:
    """Bind both addresses once, as the server will (SO_REUSEADDR), and release them.

    A port another process listens on fails the bind (EADDRINUSE) even with SO_REUSEADDR."""
    problems: list[str] = []
    with ExitStack() as held:
        for key, flag, hp in (
            ("server.listen", "--listen", config.listen),
            ("server.admin", "--admin", config.admin),
        ):
            problem = _bind(held, hp)
            if problem:
                problems.append(f"{key} = {str(hp)!r}: {problem} ({flag} or {key} sets it)")
    if problems:
        raise StartupError(problems)


def _bind(held: ExitStack, hp: HostPort) -> str | None:
    try:
        infos = socket.getaddrinfo(hp.bind_host, hp.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"cannot resolve {hp.host!r}: {exc.strerror}; use an IP address"
    for family, kind, proto, _, addr in infos:
        sock = held.enter_context(socket.socket(family, kind, proto))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(addr)  # no listen(): a connect must never reach this probe
        except OSError as exc:
            return bind_problem(exc, hp)
    return None


def bind_problem(exc: OSError, hp: HostPort) -> str:
    """What a failed bind means for an operator, with the fix."""
    if exc.errno == errno.EADDRINUSE:
        return f"port {hp.port} is already in use; stop what listens there (`ss -ltnp`) or pick another port"
    if exc.errno == errno.EACCES:
        return f"no permission to listen on port {hp.port}: below 1024 needs CAP_NET_BIND_SERVICE; use 1024+"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{hp.host} is not an address of this host; use one it has, 0.0.0.0 or :PORT (every interface)"
    return f"cannot listen: {exc.strerror or exc}"


def check_store(config: Config) -> None:
    """An embedded SQLite store needs a directory this user can create and write."""
    url = config.store.url
    if not url.startswith("sqlite:///") or url == "sqlite:///" or url.endswith(":memory:"):
        return
    db = Path(url[len("sqlite:///") :])
    where = f"store.url = {url!r}"
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            [f"{where}: cannot create {db.parent}: {exc.strerror}; create it writable"]
        ) from None
    target = db if db.exists() else db.parent
    if not os.access(target, os.W_OK | (os.X_OK if target.is_dir() else 0)):
        raise StartupError([f"{where}: {target} is not writable by this user; fix its owner or mode"])
