"""The ``[tracing]`` table: OpenTelemetry tracing, off unless the table is present.

```toml
[tracing]
endpoint = "http://127.0.0.1:4318/v1/traces"   # OTLP over HTTP (protobuf)
service_name = "popgate"
sample_ratio = 1.0        # share of new traces recorded (a client's sampled parent is followed)
export_timeout = 10.0     # seconds per export to the collector
```

On: a span per request (``SERVER``, continuing the client's W3C trace context), a child
per pipeline stage, per evidence check and per store call, and one around the upstream
exchange whose context goes to the origin as ``traceparent``/``tracestate`` (the
client's own are replaced). The OpenTelemetry packages are an optional extra,
``pip install 'popgate[tracing]'``; without them ``[tracing]`` is a config error. Off,
no OpenTelemetry module is imported and the request path is the untraced one
(:mod:`gateway.ops.otel` holds everything that runs when it is on).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from popgate.gateway.ops.validation import Collector

REQUIRED = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter")


@dataclass(frozen=True, slots=True)
class TracingSettings:
    endpoint: str
    service_name: str = "popgate"
    sample_ratio: float = 1.0
    export_timeout: float = 10.0


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def collect_settings(c: Collector, raw: Any) -> TracingSettings | None:
    """Validate ``[tracing]``, recording problems in ``c``; None when there were any."""
    before = len(c.problems)
    t = c.table("tracing", {"tracing": raw})
    c.unknown_keys("tracing", t, set(TracingSettings.__dataclass_fields__))
    endpoint = t.get("endpoint")
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        c.problem("tracing.endpoint", f"expected the collector's OTLP/HTTP URL, got {endpoint!r}")
    name = t.get("service_name", "popgate")
    if not isinstance(name, str) or not name:
        c.problem("tracing.service_name", f"expected a non-empty string, got {name!r}")
    ratio = c.number("tracing.sample_ratio", t.get("sample_ratio", 1.0), lo=0, hi=1)
    timeout = c.number("tracing.export_timeout", t.get("export_timeout", 10.0), lo=0.1, hi=300)
    missing = [m for m in REQUIRED if not _installed(m)]
    if missing:
        c.problem(
            "tracing",
            "needs the OpenTelemetry packages (missing: "
            f"{', '.join(missing)}): pip install 'popgate[tracing]', or remove [tracing]",
        )
    if len(c.problems) > before:
        return None
    return TracingSettings(str(endpoint), str(name), float(ratio or 0.0), float(timeout or 10.0))
