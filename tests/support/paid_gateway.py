"""A gateway process whose policy charges a fixed price on ``/paid/*``
(tests and benchmarks of the fee rails, until the shipped policy is used).

    python -m tests.support.paid_gateway CONFIG [PRICE_ATOMIC] [--others-by-policy]

Other paths are allowed, or (``--others-by-policy``) decided by the configured
policy (challenges, hashcash, puzzles).

Also: :class:`ChargePolicy`, the tiny policy object the in-process tests
install on ``gateway.policy.policy``.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from typing import Any

from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import Charge, Decision


class ChargePolicy:
    def __init__(
        self, price: int = 10_000, prefix: str = "/paid", route: str = "paid", fallback: Any = None
    ) -> None:
        self.price, self.prefix, self.route, self.fallback = price, prefix, route, fallback

    def decide(self, ctx: Context) -> Decision | None:
        if ctx.request.path.startswith(self.prefix):
            return Charge(price=self.price, route=self.route)
        return None if self.fallback is None else self.fallback.decide(ctx)


async def main(path: str, price: int, others_by_policy: bool = False) -> None:
    from popgate.gateway.app import build_app
    from popgate.gateway.extensions import default_extensions
    from popgate.gateway.http.server import start, tune_collector
    from popgate.gateway.ops.config import load_config
    from popgate.gateway.ops.metrics import Metrics
    from popgate.gateway.stores import open_store

    config = load_config(path)
    store = open_store(config.store.url, timeout=config.store.timeout, replica_acks=config.store.replica_acks)
    gateway = build_app(config, store=store, metrics=Metrics(), extensions=default_extensions())
    gateway.policy.policy = ChargePolicy(price, fallback=gateway.policy.policy if others_by_policy else None)
    running = await start(config, gateway=gateway)
    tune_collector()  # as `popgate run` does once started
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()


if __name__ == "__main__":
    from popgate.gateway.ops.workers import loop_runner

    price = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
    with loop_runner() as runner:  # the event loop `popgate run` serves on (uvloop when installed)
        runner.run(main(sys.argv[1], price, "--others-by-policy" in sys.argv))
