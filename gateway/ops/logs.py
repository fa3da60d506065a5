"""Logs: the ``[log]`` table, text or JSON lines, and the access log.

```toml
[log]
format = "json"       # "text" (default) or "json": one JSON object per line
level = "info"        # debug, info, warning, error (popgate run --log-level overrides)
access = true         # one line per request (also [server] access_log = true)
ipv4_prefix = 24      # the client address is logged as its network: /24 ...
ipv6_prefix = 64      # ... and /64 (0: no address at all)
```

A JSON line is ``{"time", "level", "logger", "event", ...fields}``: ``time`` in UTC with
milliseconds, ``event`` the message, fields from ``extra={"fields": {...}}``. Stdlib
:mod:`logging` only (no structlog or python-json-logger): every module already logs
through it, the formatter is 20 lines, and one dependency fewer on the install path.

The access line (:class:`AccessLog`, logger ``popgate.access``) carries method, path
(normalized, never the query), status, class, decision, rule, evidence kind, the
pseudonymous subject, latency and bytes, and the client's *network* only. Nothing in it
comes from a credential: no token, cookie, signature, proof or nullifier is read.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from popgate.gateway.errors import GatewayError
from popgate.gateway.ops.validation import Collector
from popgate.gateway.pipeline.context import Context
from popgate.verifiers.net import network_of

LEVELS = ("debug", "info", "warning", "error")
MAX_PATH = 512


@dataclass(frozen=True, slots=True)
class LogSettings:
    format: str = "text"
    level: str = "info"
    access: bool = False
    ipv4_prefix: int = 24
    ipv6_prefix: int = 64


def collect_settings(c: Collector, raw: Any) -> LogSettings:
    """Validate ``[log]`` (absent: the defaults), recording problems in ``c``."""
    t = c.table("log", {"log": raw if raw is not None else {}})
    d = LogSettings()
    c.unknown_keys("log", t, set(LogSettings.__dataclass_fields__))
    fmt, level, access = t.get("format", d.format), t.get("level", d.level), t.get("access", d.access)
    if fmt not in ("text", "json"):
        c.problem("log.format", f'expected "text" or "json", got {fmt!r}')
    if not isinstance(level, str) or level.lower() not in LEVELS:
        c.problem("log.level", f"expected one of {', '.join(LEVELS)}, got {level!r}")
    if not isinstance(access, bool):
        c.problem("log.access", f"expected true or false, got {access!r}")
    v4 = c.number("log.ipv4_prefix", t.get("ipv4_prefix", d.ipv4_prefix), lo=0, hi=32, integer=True)
    v6 = c.number("log.ipv6_prefix", t.get("ipv6_prefix", d.ipv6_prefix), lo=0, hi=128, integer=True)
    return LogSettings(
        format=str(fmt) if fmt in ("text", "json") else d.format,
        level=str(level).lower() if isinstance(level, str) and level.lower() in LEVELS else d.level,
        access=access is True,
        ipv4_prefix=int(v4) if v4 is not None else d.ipv4_prefix,
        ipv6_prefix=int(v6) if v6 is not None else d.ipv6_prefix,
    )


def _utc(created: float) -> str:
    t = time.gmtime(created)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', t)}.{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, event, then the record's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            out.update(fields)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"), default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: event key=value ...``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{k}={v}" for k, v in fields.items())
        return line


def configure(settings: LogSettings, level: str | None = None, stream: Any = None) -> None:
    """Install one stderr handler on the root logger with the configured format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel((level or settings.level).upper())


class AccessLog:
    """One ``popgate.access`` line per request (see the module doc for the fields)."""

    __slots__ = ("_log", "v4", "v6")

    def __init__(self, settings: LogSettings) -> None:
        self._log = logging.getLogger("popgate.access")
        self._log.setLevel(logging.INFO)  # on by its own switch, whatever the root level
        self.v4, self.v6 = settings.ipv4_prefix, settings.ipv6_prefix

    def __call__(self, ctx: Context, response: web.StreamResponse, decision: str, seconds: float) -> None:
        request = ctx.request
        try:
            path = ctx.target.path[:MAX_PATH]
        except GatewayError:
            path = "-"  # a target popgate refused (400/405): not echoed
        fields = {
            "method": request.method,
            "path": path,
            "status": response.status,
            "class": ctx.klass,
            "decision": decision,
            "rule": ctx.rule,
            "evidence": ctx.evidence_kind,
            "subject": ctx.subject,
            "latency_ms": round(seconds * 1000, 3),
            "bytes": response.body_length if response.prepared else response.content_length or 0,
            "client": self.network(ctx),
        }
        self._log.info("access", extra={"fields": fields})

    def network(self, ctx: Context) -> str:
        ip = ctx.client_ip
        if (self.v4 if ip.version == 4 else self.v6) == 0:
            return ""
        if self.v4 == 24 and self.v6 == 64:
            return ctx.network  # the /24 or /64 popgate binds puzzles to (computed once)
        return network_of(ip, self.v4 or 32, self.v6 or 128)
