"""Two gateways of one fleet in-process: the same keys and store, different ports."""

from __future__ import annotations

import re
from pathlib import Path

from popgate.gateway.ops.config import Config, load_config
from tests.support.servers import free_port, write_config


def fleet_configs(tmp: Path, upstream: str, *, store: str, extra: str, n: int = 2) -> list[Config]:
    """``n`` configs sharing session keys (so subject keys and challenges) and the store."""
    first = write_config(tmp, upstream, store=store, extra=extra)
    text = first.read_text()
    configs = [load_config(first)]
    for i in range(1, n):
        other = re.sub(r'listen = "127\.0\.0\.1:\d+"', f'listen = "127.0.0.1:{free_port()}"', text)
        other = re.sub(r'admin = "127\.0\.0\.1:\d+"', f'admin = "127.0.0.1:{free_port()}"', other)
        path = tmp / f"popgate{i}.toml"
        path.write_text(other)
        configs.append(load_config(path))
    return configs
