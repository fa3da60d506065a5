"""The ``popgate`` command: ``run``, ``check``, ``explain``, ``verify SCHEME``,
``keys generate``, ``demo-upstream``, ``--version``.

Start-up problems (configuration, policy, dead ends, ports, store directory)
are one line each with the fix and exit status 2 (:mod:`gateway.cli.startup`).
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from popgate.gateway.cli.startup import StartupError, check_listeners, check_store, configure, report
from popgate.gateway.cli.verify_help import epilog
from popgate.gateway.ops.logs import configure as configure_logging

STORES = (
    "memory://, sqlite:///PATH, redis://HOST:PORT/DB, redis+cluster://HOST:PORT[,HOST:PORT...]/ "
    "or redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB]"
)


def _version() -> str:
    try:
        return version("popgate")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
        return "unknown"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="popgate", description="Proof-of-personhood and bot-metering gateway")
    p.add_argument("--version", action="version", version=f"popgate {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _run_parser(sub)
    check = sub.add_parser("check", help="validate a config and its policy; list what each class may do")
    check.add_argument("--config", required=True, help="TOML config file")
    _explain_parser(sub)
    raw = argparse.RawDescriptionHelpFormatter
    ver = sub.add_parser(
        "verify",
        help="check evidence cases given as JSON Lines on stdin",
        epilog=epilog(),
        formatter_class=raw,
    )
    ver.add_argument("scheme", help="the kind of evidence (listed below)")
    ver.add_argument(
        "--config", help="TOML config file (keys for session and puzzle; zklogin, x402 settings)"
    )
    keys = sub.add_parser("keys", help="key management")
    ksub = keys.add_subparsers(dest="keys_command", required=True, help="generate")
    ksub.add_parser("generate", help="print a new random 32-byte secret (base64url)")
    demo = sub.add_parser("demo-upstream", help="run a small demo origin server")
    demo.add_argument("--listen", default="127.0.0.1:8000", help="HOST:PORT (default 127.0.0.1:8000)")
    return p


def _run_parser(sub: Any) -> None:
    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("--config", help="TOML config file (relative paths in it: against its directory)")
    run.add_argument("--upstream", help="origin URL, e.g. http://127.0.0.1:8000")
    run.add_argument("--listen", help="HOST:PORT or :PORT (every interface) for the proxy (127.0.0.1:8080)")
    run.add_argument("--admin", help="HOST:PORT or :PORT for metrics/health/admin API (127.0.0.1:9090)")
    run.add_argument("--store", help=STORES)
    run.add_argument("--workers", type=int, default=None, help="worker processes sharing the port (1)")
    levels = ("DEBUG", "INFO", "WARNING", "ERROR")
    run.add_argument(
        "--log-level", default=None, type=str.upper, choices=levels, help="(default: [log] level, INFO)"
    )


def _explain_parser(sub: Any) -> None:
    ex = sub.add_parser(
        "explain",
        help="show the rule, class, weight, decision and ways out for one request",
        description="Runs the real pipeline on one request up to the decision (nothing spent or forwarded).",
    )
    ex.add_argument("--config", required=True, help="TOML config file")
    ex.add_argument("method", metavar="METHOD", help="GET, POST, ...")
    ex.add_argument("url", metavar="URL", help="http://host/path?query (the Host header is the URL's)")
    ex.add_argument("-H", "--header", action="append", default=[], help="'Name: value' (repeatable)")
    ex.add_argument("--ip", default="203.0.113.10", help="the client address (default 203.0.113.10)")
    ex.add_argument("--json", action="store_true", help="print one JSON object")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except StartupError as exc:
        return report(exc)


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "verify":
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        # why: each sub-command imports only what it runs (a fast `popgate keys`, no server for verify)
        from popgate.gateway.cli.verify import main as verify_main

        return verify_main(args.scheme, args.config)
    if args.command == "keys":
        print(base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode())
        return 0
    if args.command == "demo-upstream":
        from popgate.gateway.cli.demo_upstream import run as run_demo  # why: sub-command only

        host, _, port = args.listen.rpartition(":")
        run_demo(host or "127.0.0.1", int(port))
        return 0
    if args.command == "check":
        return _check(args.config)
    if args.command == "explain":
        return _explain(args)
    return _run(args)


def _check(path: str) -> int:
    from popgate.gateway.cli.check import report as check_report  # why: sub-command only

    config, warnings = configure(path)
    print("\n".join(check_report(config, warnings, path)))
    return 0


def _explain(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    from popgate.gateway.cli.explain import run as explain_run  # why: builds a gateway, sub-command only

    config, _ = configure(args.config)
    try:
        return explain_run(config, args.method, args.url, args.header, args.ip, args.json)
    except ValueError as exc:
        raise StartupError([f"explain: {exc}"]) from None


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=(args.log_level or "INFO").upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    overrides = {
        "server.upstream": args.upstream,
        "server.listen": args.listen,
        "server.admin": args.admin,
        "store.url": args.store,
    }
    config, warnings = configure(args.config, overrides)
    for warning in warnings:
        logging.getLogger("popgate").warning("NO WAY OUT: %s", warning)
    check_listeners(config)
    check_store(config)
    configure_logging(config.features.log, args.log_level)  # [log] format and level, from here on
    from popgate.gateway.ops.workers import run_workers  # why: the server stack, only when serving

    try:
        return run_workers(config, args.workers or 1)
    except OSError as exc:  # a bind lost to a race after the checks, a store that cannot open
        raise StartupError([f"cannot start: {exc.strerror or exc}"]) from None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
