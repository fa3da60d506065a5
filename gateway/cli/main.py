"""The ``popgate`` command: ``run``, ``verify SCHEME``, ``keys generate``, ``demo-upstream``."""

from __future__ import annotations

import argparse
import base64
import logging
import os
import sys

from popgate.gateway.ops.config import ConfigError, load_config
from popgate.gateway.ops.logs import configure as configure_logging


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="popgate", description="Proof-of-personhood and bot-metering gateway")
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the gateway")
    run.add_argument("--config", help="TOML config file")
    run.add_argument("--upstream", help="origin URL, e.g. http://127.0.0.1:8000")
    run.add_argument("--listen", help="HOST:PORT for the proxy (default 127.0.0.1:8080)")
    run.add_argument("--admin", help="HOST:PORT for metrics/health (default 127.0.0.1:9090)")
    run.add_argument(
        "--store",
        help="memory://, sqlite:///PATH, redis://HOST:PORT/DB, redis+cluster://HOST:PORT[,HOST:PORT...]/ "
        "or redis+sentinel://HOST:PORT[,HOST:PORT...]/MASTERNAME[/DB]",
    )
    run.add_argument("--workers", type=int, default=None, help="worker processes sharing the port")
    run.add_argument("--log-level", default=None, help="debug, info, warning, error (default: [log] level)")
    ver = sub.add_parser("verify", help="check evidence cases given as JSON Lines on stdin")
    ver.add_argument("scheme")
    ver.add_argument("--config", help="TOML config file (keys for session and puzzle)")
    keys = sub.add_parser("keys", help="key management")
    ksub = keys.add_subparsers(dest="keys_command", required=True)
    ksub.add_parser("generate", help="print a new random 32-byte secret (base64url)")
    demo = sub.add_parser("demo-upstream", help="run a small demo origin server")
    demo.add_argument("--listen", default="127.0.0.1:8000")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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
    try:
        config = load_config(args.config, overrides)
    except ConfigError as exc:
        print(f"popgate: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.features.log, args.log_level)  # [log] format and level, from here on
    from popgate.gateway.ops.workers import run_workers  # why: the server stack, only when serving

    return run_workers(config, args.workers or 1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
