"""The challenge page's extension: its files, its language switcher, the hook.

- ``GET /.well-known/popgate/static/challenge.js`` (the page's script),
  ``.../idkit-standalone.js`` (the vendored World ID widget, see
  ``deploy/vendor/vendor_idkit.py``), ``.../idkit-core.js`` + ``idkit_wasm_bg.wasm``
  (IDKit 4) and ``qrcode.js`` (the page's QR code), and ``.../solve.py`` (the no-JS puzzle
  solver): fixed files read once, served with ``nosniff`` and a cache time;
- ``GET /.well-known/popgate/lang?l=de&return=/path``: sets the
  ``popgate_lang`` cookie and sends the browser back (303) to a local path;
- ``registry.html_challenge``: :class:`ChallengePage` built from ``[page]``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from popgate.gateway.pipeline.challenge_page import (
    IDKIT,
    IDKIT4,
    IDKIT4_WASM,
    LANG_ENDPOINT,
    QRCODE,
    SCRIPT,
    SOLVER,
    STATIC,
    ChallengePage,
    safe_return_path,
)
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.page_i18n import COOKIE, LANGS
from popgate.gateway.pipeline.responses import problem
from popgate.gateway.registry import Registry, Services

Handler = Callable[[web.BaseRequest, Context], Awaitable[web.StreamResponse]]
FILES = {
    SCRIPT: ("challenge.js", "text/javascript"),
    IDKIT: ("vendor/idkit-standalone.js", "text/javascript"),
    IDKIT4: ("vendor/idkit-core.js", "text/javascript"),
    IDKIT4_WASM: ("vendor/idkit_wasm_bg.wasm", "application/wasm"),
    QRCODE: ("vendor/qrcode.js", "text/javascript"),
    SOLVER: ("solve.py", "text/x-python"),
}
LANG_COOKIE_AGE = 365 * 86400


def _not_get(request: web.BaseRequest) -> web.Response | None:
    if request.method in ("GET", "HEAD"):
        return None
    return problem(request, 405, "method_not_allowed", "Method not allowed", headers={"Allow": "GET, HEAD"})


def static_file(name: str, content_type: str) -> Handler:
    """A handler serving ``gateway/static/<name>`` (read once, at start-up)."""
    body = (STATIC / name).read_bytes()
    headers = {"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"}

    async def handler(request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        refused = _not_get(request)
        if refused is not None:
            return refused
        charset = None if content_type == "application/wasm" else "utf-8"  # WebAssembly wants the bare type
        return web.Response(body=body, content_type=content_type, charset=charset, headers=headers)

    return handler


def lang_endpoint(secure: bool) -> Handler:
    """``GET ?l=<lang>&return=<path>``: remember the language, go back (303)."""

    async def handler(request: web.BaseRequest, ctx: Context) -> web.StreamResponse:
        refused = _not_get(request)
        if refused is not None:
            return refused
        lang = request.query.get("l", "")
        if lang not in LANGS:
            return problem(
                request, 400, "unknown_language", "Unknown language", f"one of: {', '.join(LANGS)}"
            )
        back = safe_return_path(request.query.get("return", "/"))
        resp = web.Response(status=303, headers={"Location": back, "Cache-Control": "no-store"})
        resp.set_cookie(
            COOKIE, lang, path="/", max_age=LANG_COOKIE_AGE, httponly=True, samesite="Lax", secure=secure
        )
        return resp

    return handler


def page_extension(registry: Registry, services: Services) -> None:
    """Wire the challenge page from the validated ``[page]`` (always on)."""
    config = services.config
    registry.html_challenge = ChallengePage(config.features.page)
    for path, (name, ctype) in FILES.items():
        registry.endpoints[path] = static_file(name, ctype)
    registry.endpoints[LANG_ENDPOINT] = lang_endpoint(config.sessions.cookie_secure)
