"""The extensions popgate ships: :func:`default_extensions` is what the
server, the CLI and the tests pass to :func:`gateway.app.build_app`.

An extension is ``(registry, services) -> None`` (:mod:`gateway.registry`): it
registers evidence schemes, ``/.well-known/popgate/*`` endpoints, way-out
providers, enforcers, background tasks or the policy. Each reads its own
already-validated settings from ``services.config.features`` and does nothing
when its table is absent. The app never imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path

from aiohttp import web

from popgate.gateway.ops.status import status_extension
from popgate.gateway.payments.fees import payments
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.policy_stage import policy_extension
from popgate.gateway.pipeline.responses import problem
from popgate.gateway.registry import Extension, Registry, Services
from popgate.gateway.schemes.webbotauth import webbotauth_extension
from popgate.gateway.schemes.worldid import worldid_extension
from popgate.gateway.schemes.zklogin import zklogin_extension
from popgate.verifiers.errors import VerificationError


def session_endpoint(registry: Registry, services: Services) -> None:
    """``GET /.well-known/popgate/session``: what the presented session says.

    ``DELETE`` clears the session cookie (sign out).
    """
    scheme = registry.session
    cookie = services.config.sessions.cookie_name

    async def handler(request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        if request.method == "DELETE":
            resp = web.Response(status=204, headers={"Cache-Control": "no-store"})
            resp.del_cookie(cookie, path="/")
            return resp
        if request.method not in ("GET", "HEAD"):
            return problem(
                request,
                405,
                "method_not_allowed",
                "Method not allowed",
                headers={"Allow": "GET, HEAD, DELETE"},
            )
        token = scheme.extract(request)
        if token is None:
            return problem(request, 401, "no_session", "No session presented")
        try:
            session = services.sessions.verify(token, ctx.now)
        except VerificationError as exc:
            return problem(request, 401, exc.reason, "Session rejected")
        body = {
            "class": session.klass,
            "subject": session.subject,
            "evidence": session.evidence,
            "scope": session.scope,
            "issued_at": session.issued_at,
            "expires": session.expires,
            "budget": session.budget,
            "bound": session.binding is not None,
        }
        return web.Response(
            body=json.dumps(body).encode(),
            content_type="application/json",
            headers={"Cache-Control": "no-store"},
        )

    registry.endpoints["/.well-known/popgate/session"] = handler


CLIENT_JS = "/.well-known/popgate/static/popgate-client.js"


def client_script(registry: Registry, services: Services) -> None:
    """``GET /.well-known/popgate/static/popgate-client.js``: the JS client (an ES module)."""
    body = (Path(__file__).parent / "static" / "popgate-client.js").read_bytes()

    async def handler(request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        if request.method not in ("GET", "HEAD"):
            return problem(
                request, 405, "method_not_allowed", "Method not allowed", headers={"Allow": "GET, HEAD"}
            )
        headers = {"Cache-Control": "public, max-age=300", "X-Content-Type-Options": "nosniff"}
        return web.Response(body=body, content_type="text/javascript", charset="utf-8", headers=headers)

    registry.endpoints[CLIENT_JS] = handler


def default_extensions() -> list[Extension]:
    """Every extension popgate ships, in the order they register."""
    return [
        session_endpoint,
        client_script,
        policy_extension,
        status_extension,
        payments,
        zklogin_extension,
        webbotauth_extension,
        worldid_extension,
    ]
