"""The admin listener (its own port): metrics, health, readiness.

``/`` lists what this listener serves; any other path answers a 404 that lists
it too, and names the table that turns on what was asked for (``/admin/...``
without ``[credits] admin_token``).

``/metrics`` serves the gateway's registry (with ``--workers N``, every
worker's numbers aggregated: :func:`gateway.ops.status.scrape_registry`); ``/healthz`` says the process
answers; ``/readyz`` checks that the store answers and the upstream accepts
TCP connections (checked at most once a second).
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from popgate.gateway.app import Gateway
from popgate.gateway.ops.status import scrape_registry
from popgate.gateway.stores.base import StoreUnavailable

GATEWAY = web.AppKey("gateway", Gateway)
READY_CACHE_SECONDS = 1.0


async def metrics(request: web.Request) -> web.Response:
    registry = scrape_registry(request.app[GATEWAY].metrics)  # all workers' numbers
    body = await asyncio.get_running_loop().run_in_executor(None, generate_latest, registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class Readiness:
    """Checks store and upstream; caches the answer briefly."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.checked = 0.0
        self.result: dict[str, str] = {}

    async def check(self) -> dict[str, str]:
        if time.monotonic() - self.checked < READY_CACHE_SECONDS:
            return self.result
        result = {"store": "ok"}
        try:
            await asyncio.wait_for(self.gateway.services.store.ping(), 2.0)
        except (TimeoutError, StoreUnavailable) as exc:
            result["store"] = f"unavailable: {type(exc).__name__}"
        up = self.gateway.config.upstream
        if up is not None:  # forward-auth mode has no origin to reach
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(up.host, up.port), 2.0)
                writer.close()
                result["upstream"] = "ok"
            except (TimeoutError, OSError) as exc:
                result["upstream"] = f"unreachable: {type(exc).__name__}"
        self.checked, self.result = time.monotonic(), result
        return result


def build_admin(gateway: Gateway) -> web.Application:
    """The admin application; extensions may add routes via ``gateway.admin_routes``."""
    app = web.Application()
    app[GATEWAY] = gateway
    readiness = Readiness(gateway)

    async def readyz(request: web.Request) -> web.Response:
        result = await readiness.check()
        ok = all(v == "ok" for v in result.values())
        return web.Response(
            status=200 if ok else 503, body=json.dumps(result).encode(), content_type="application/json"
        )

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    for method, path, handler in getattr(gateway, "admin_routes", []):
        app.router.add_route(method, path, handler)
    _index_and_not_found(app)
    return app


def _index_and_not_found(app: web.Application) -> None:
    """``/`` lists the routes; anything else is a 404 that lists them too and says what is off."""
    routes = sorted({f"{r.method} {r.resource.canonical}" for r in app.router.routes() if r.resource})
    routes = [r for r in routes if not r.startswith("HEAD ")]

    async def index(request: web.Request) -> web.Response:
        return web.json_response({"service": "popgate admin", "routes": routes})

    async def not_found(request: web.Request) -> web.Response:
        body: dict[str, object] = {
            "type": "urn:popgate:problem:not_found",
            "title": "Not found",
            "status": 404,
        }
        if request.path.startswith("/admin/") and not any(" /admin/credits" in r for r in routes):
            body["detail"] = "the credits and fees API is off: set [credits] admin_token to turn it on"
        body["routes"] = routes
        return web.json_response(body, status=404, content_type="application/problem+json")

    app.router.add_get("/", index)
    app.router.add_route("*", "/{tail:.*}", not_found)
