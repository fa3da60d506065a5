"""The one place that turns decisions and errors into HTTP responses.

API clients get RFC 9457 problem+json; browsers (``Accept`` naming
``text/html``) get a small readable page. A challenge is always status 402,
never HTML with 200. Gateway-made responses are never cached.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from typing import Any

from aiohttp import web

from popgate.gateway.errors import Answered, GatewayError, MethodNotAllowed
from popgate.gateway.pipeline.decisions import Challenge, Charge, Decision, Deny, Rendered, Throttle

PROBLEM_TYPE = "urn:popgate:problem:"
BASE_HEADERS = {"Cache-Control": "no-store"}

# the page, or the page and its own headers (Content-Security-Policy...)
HtmlChallenge = Callable[[web.BaseRequest, Challenge], str | tuple[str, dict[str, str]]]
OWN_HEADERS = {"Server": "popgate", "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}

TITLES = {
    "evidence_required": "Evidence required",
    "rate_limited": "Too many requests",
    "denied": "Forbidden",
    "payment_required": "Payment required",
}


def own_headers(response: web.StreamResponse, browsers: bool = True) -> None:
    """popgate's own answers: no version in ``Server``; for an answer a browser may see,
    ``nosniff`` and no referrer too (set unless the response already chose; a response
    already sent is left alone)."""
    if response.prepared:
        return
    response.headers["Server"] = OWN_HEADERS["Server"]
    if browsers:
        for name in ("X-Content-Type-Options", "Referrer-Policy"):
            response.headers.setdefault(name, OWN_HEADERS[name])


def wants_html(request: web.BaseRequest) -> bool:
    """True for a browser navigation (Accept names text/html)."""
    return "text/html" in request.headers.get("Accept", "")


def problem(
    request: web.BaseRequest,
    status: int,
    reason: str,
    title: str,
    detail: str = "",
    extra: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Render a problem as problem+json, or as a small HTML page for browsers."""
    hdrs = dict(BASE_HEADERS)
    if headers:
        hdrs.update(headers)
    if wants_html(request):
        return web.Response(
            status=status,
            text=_page(status, title, detail),
            headers=hdrs,
            content_type="text/html",
            charset="utf-8",
        )
    body: dict[str, Any] = {"type": PROBLEM_TYPE + reason, "title": title, "status": status, "reason": reason}
    if detail:
        body["detail"] = detail
    if extra:
        body.update(extra)
    return web.Response(
        status=status,
        body=json.dumps(body, separators=(",", ":")).encode(),
        headers=hdrs,
        content_type="application/problem+json",
    )


def error_response(request: web.BaseRequest, exc: GatewayError) -> web.Response:
    """Render a GatewayError; only its public parts reach the client."""
    if isinstance(exc, Answered) and isinstance(exc.response, web.Response):
        return exc.response
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if exc.status in (413, 431, 400, 405):
        headers["Connection"] = "close"
    if isinstance(exc, MethodNotAllowed):
        headers["Allow"] = exc.allow
    headers.update(exc.headers)
    return problem(request, exc.status, exc.reason, exc.title, exc.public or "", headers=headers)


def decision_response(
    request: web.BaseRequest, decision: Decision, html_challenge: HtmlChallenge | None = None
) -> web.Response:
    """Render a non-Allow decision."""
    if isinstance(decision, Challenge):
        return challenge_response(request, decision, html_challenge)
    if isinstance(decision, Charge):
        return challenge_response(
            request,
            Challenge(reason=decision.reason, ways_out=decision.ways_out, detail=decision.detail),
            html_challenge,
        )
    if isinstance(decision, Throttle):
        retry = str(max(1, math.ceil(decision.retry_after)))
        return problem(
            request,
            429,
            decision.reason,
            TITLES["rate_limited"],
            "Slow down and retry later.",
            {"retry_after": int(retry)},
            {"Retry-After": retry},
        )
    if isinstance(decision, Deny):
        return problem(request, 403, decision.reason, TITLES["denied"], decision.detail)
    raise TypeError(f"no response for {decision!r}")


def challenge_response(
    request: web.BaseRequest, challenge: Challenge, html_challenge: HtmlChallenge | None = None
) -> web.Response:
    """402 with every way out in the body and the standard headers clients read."""
    r = challenge.rendered or render_challenge(request, challenge, html_challenge)
    return web.Response(status=402, body=r.body, headers=r.headers)


def render_challenge(
    request: web.BaseRequest, challenge: Challenge, html_challenge: HtmlChallenge | None = None
) -> Rendered:
    """The bytes of a 402: headers (``WWW-Authenticate`` gathered from the ways out) and body."""
    headers = dict(BASE_HEADERS)
    auth = ['PoP realm="popgate"']
    for way in challenge.ways_out:
        for name, value in way.headers:
            if name.lower() == "www-authenticate":
                auth.append(value)
            else:
                headers[name] = value
    headers["WWW-Authenticate"] = ", ".join(auth)
    if wants_html(request):
        page = (
            html_challenge(request, challenge)
            if html_challenge
            else _page(402, TITLES["evidence_required"], challenge.detail)
        )
        text, extra = (page, {}) if isinstance(page, str) else page
        headers.update(extra)
        headers["Content-Type"] = "text/html; charset=utf-8"
        return Rendered(tuple(headers.items()), text.encode())
    body = {
        "type": PROBLEM_TYPE + challenge.reason,
        "title": TITLES.get(challenge.reason, "Evidence required"),
        "status": 402,
        "reason": challenge.reason,
        "detail": challenge.detail,
        "ways_out": [{"kind": w.kind, **w.params} for w in challenge.ways_out],
    }
    headers["Content-Type"] = "application/problem+json"
    return Rendered(tuple(headers.items()), json.dumps(body, separators=(",", ":")).encode())


def _page(status: int, title: str, detail: str) -> str:
    t, d = html.escape(title), html.escape(detail)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{status} {t}</title></head><body><main>"
        f"<h1>{t}</h1><p>{d}</p><p><small>popgate · status {status}</small></p>"
        "</main></body></html>"
    )
