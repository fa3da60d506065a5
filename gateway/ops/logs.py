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

The access line (:class:`AccessLog`, written to stderr beside the log, in the same
format, as logger ``popgate.access``) carries method, path
(normalized, never the query), status, class, decision, rule, evidence kind, the
pseudonymous subject, latency and bytes, and the client's *network* only. Nothing in it
comes from a credential: no token, cookie, signature, proof or nullifier is read.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii
from typing import Any, TextIO

from aiohttp import web

from popgate.gateway.errors import GatewayError
from popgate.gateway.ops.validation import Collector
from popgate.gateway.pipeline.context import Context
from popgate.verifiers.net import network_of

LEVELS = ("debug", "info", "warning", "error")
_ENCODE_ANY = json.JSONEncoder(separators=(",", ":"), default=str).encode  # one encoder, not one a call
_quote = encode_basestring_ascii
FIELDS = (
    "method",
    "path",
    "status",
    "class",
    "decision",
    "rule",
    "evidence",
    "subject",
    "latency_ms",
    "bytes",
    "client",
)
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
        return _ENCODE_ANY(out)


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
    """One ``popgate.access`` line per request (see the module doc for the fields).

    Cheap on the hot path: the line is formatted here (no LogRecord, the time stamp
    rebuilt once a second) and written in batches: when 4000 bytes are waiting, else
    within ``FLUSH_AFTER`` seconds, and on :meth:`flush` at shutdown. A batch is whole
    lines under PIPE_BUF, so workers sharing a pipe never interleave within a line.
    """

    FLUSH_AFTER = 0.25
    BATCH = 4000

    __slots__ = ("_buf", "_second", "_size", "_stamp", "_timer", "json", "stream", "v4", "v6")

    def __init__(self, settings: LogSettings, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.json = settings.format == "json"
        self.v4, self.v6 = settings.ipv4_prefix, settings.ipv6_prefix
        self._buf: list[str] = []
        self._size = 0
        self._second = -1
        self._stamp = ""
        self._timer: asyncio.TimerHandle | None = None

    def __call__(self, ctx: Context, response: web.StreamResponse, decision: str, seconds: float) -> None:
        try:
            path = ctx.target.path[:MAX_PATH]
        except GatewayError:
            path = "-"  # a target popgate refused (400/405): not echoed
        values = (
            ctx.request.method,
            path,
            response.status,
            ctx.klass,
            decision,
            ctx.rule,
            ctx.evidence_kind,
            ctx.subject,
            round(seconds * 1000, 3),
            response.body_length if response.prepared else response.content_length or 0,
            self.network(ctx),
        )
        self.write(self.line(values))

    def line(self, v: tuple[Any, ...]) -> str:
        """The access line for ``v`` (the values of ``FIELDS``), JSON or text."""
        now = time.time()
        second = int(now)
        if second != self._second:
            self._second = second
            if self.json:
                self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            else:
                self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
        ms = int(now % 1 * 1000)
        if not self.json:
            pairs = " ".join([f"{k}={x}" for k, x in zip(FIELDS, v)])
            return f"{self._stamp},{ms:03d} INFO popgate.access: access {pairs}\n"
        q = _quote  # strings escaped by the C encoder; numbers are ints and floats
        return (
            f'{{"time":"{self._stamp}.{ms:03d}Z","level":"info","logger":"popgate.access","event":"access",'
            f'"method":{q(v[0])},"path":{q(v[1])},"status":{v[2]},"class":{q(v[3])},"decision":{q(v[4])},'
            f'"rule":{q(v[5])},"evidence":{q(v[6])},"subject":{q(v[7])},"latency_ms":{v[8]},'
            f'"bytes":{v[9]},"client":{q(v[10])}}}\n'
        )

    def write(self, line: str) -> None:
        if self._size + len(line) > self.BATCH:
            self.flush()
        self._buf.append(line)
        self._size += len(line)
        if self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(self.FLUSH_AFTER, self.flush)
            except RuntimeError:  # no loop (a direct call): write now
                self.flush()

    def flush(self) -> None:
        """Write what is waiting (also called at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._buf:
            data = "".join(self._buf)
            self._buf.clear()
            self._size = 0
            try:
                self.stream.write(data)
                self.stream.flush()
            except (OSError, ValueError):
                pass  # stderr gone (closed pipe): the gateway keeps serving

    def network(self, ctx: Context) -> str:
        ip = ctx.client_ip
        if (self.v4 if ip.version == 4 else self.v6) == 0:
            return ""
        if self.v4 == 24 and self.v6 == 64:
            return ctx.network  # the /24 or /64 popgate binds puzzles to (computed once)
        return network_of(ip, self.v4 or 32, self.v6 or 128)
