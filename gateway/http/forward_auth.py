"""Forward-auth: the operator's proxy asks popgate about a request it carries.

``/.well-known/popgate/auth`` (any method) rebuilds the original request from
the forward-auth headers (``X-Forwarded-Method``, ``-Proto``, ``-Host``,
``-Uri``, ``-For``) plus the original headers the proxy passes along, or, in
Envoy's ext_authz shape, from the auth request itself (its method, its Host,
and the path after the endpoint's prefix). Those headers are believed only
from ``[server] trusted_proxies``: any other caller gets 403.

The gateway runs the same pipeline on the rebuilt request. Allow answers 200
with the ``PoP-*`` headers for the proxy to copy onto the upstream request;
anything else answers exactly what inline mode sends. nginx's
``auth_request`` understands only 2xx/401/403, so its subrequest says
``X-Popgate-Auth: subrequest`` and gets 401 (with ``X-Popgate-Decision``)
carrying the whole answer: a problem+json 402/403/429 as headers nginx's
``error_page 401`` location returns itself (:func:`plain_answer`), anything
else sealed in ``X-Popgate-Verdict``, which that location sends back as the
body of a render call (``X-Popgate-Auth: render``) and popgate returns without
deciding again (:mod:`gateway.http.verdicts`). A route listed in ``[forward_auth]
inline_routes`` answers the subrequest 403 instead, before any charge or store
effect: nginx's ``error_page 403`` sends the request through popgate inline.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from popgate.gateway.errors import BadRequest, Forbidden
from popgate.gateway.http.auth_wire import Encoded
from popgate.gateway.http.headers import HOP_BY_HOP, IPAddress, Network, is_trusted, parse_ip
from popgate.gateway.http.verdicts import MAX_SEALED, Sealer
from popgate.gateway.pipeline.context import Context
from popgate.gateway.pipeline.decisions import Rendered
from popgate.gateway.pipeline.responses import own_headers, problem

AUTH_PATH = "/.well-known/popgate/auth"
SEALED_KEY = web.RequestKey("popgate.sealed", bytes)  # a render call's body, read by the auth listener
STYLE_HEADER = "X-Popgate-Auth"  # "subrequest" (nginx auth_request) | "render" (nginx error_page)
DECISION_HEADER = "X-Popgate-Decision"
VERDICT_HEADER = "X-Popgate-Verdict"  # the sealed refusal nginx hands back to the render call
# Headers that describe the auth call, not the original request.
CONTROL = frozenset(
    {"x-forwarded-method", "x-forwarded-uri", "x-forwarded-host", "x-popgate-auth", "content-length", "host"}
)
DROP = CONTROL | HOP_BY_HOP  # names (lower case) the rebuilt request leaves out
TARGET = CONTROL | {"x-forwarded-proto"}  # the names original_target reads (lower case)
METHOD = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,32}")
URI = re.compile(r"/[\x21-\x7e]{0,8191}")  # origin-form: printable ASCII, no spaces
HOST = re.compile(r"[0-9A-Za-z.\-_:\[\]]{1,300}")
STYLES = ("subrequest", "render", "")
# What the nginx config answers itself for a refusal (the rest goes through the render call).
PLAIN_STATUSES = frozenset({402, 403, 429})
PLAIN_HEADERS = frozenset(
    {"www-authenticate", "payment-required", "retry-after", "cache-control", "crawler-price"}
)
PLAIN_MAX = 8192


def is_auth_path(path: str) -> bool:
    return path == AUTH_PATH or path.startswith(AUTH_PATH + "/")


@dataclass(frozen=True, slots=True)
class AuthCall:
    """One forward-auth call from a trusted proxy, and how it wants the answer."""

    style: str

    def allow(self, ctx: Context, reuse: int) -> web.Response:
        """200 with the identity headers the proxy copies onto the upstream request,
        and whether the edge may reuse it (``X-Accel-Expires``, seconds; 0: never)."""
        cache = f"private, max-age={reuse}" if reuse else "no-store"
        headers = [("Cache-Control", cache), ("X-Accel-Expires", str(reuse)), (DECISION_HEADER, "allow")]
        headers += ctx.origin_headers()
        headers += ctx.response_headers
        return web.Response(status=200, headers=headers)

    def finish(
        self, response: web.StreamResponse, decision: str, sealer: Sealer, now: float
    ) -> web.StreamResponse:
        """nginx's auth subrequest takes only 2xx/401/403: every refusal becomes 401
        carrying the sealed answer for the render call (see :mod:`gateway.http.verdicts`)."""
        if self.style != "subrequest" or 200 <= response.status < 300 or decision == "inline":
            return response
        if isinstance(response, ForProxy):
            return response
        headers = _refusal_headers(decision)
        if isinstance(response, web.Response):
            plain = plain_answer(response)
            if plain is not None:
                headers.update(plain)
            else:
                headers[VERDICT_HEADER] = sealer.seal(response, now)
        return web.Response(status=401, headers=headers)

    def reused(self, rendered: Rendered, decision: str) -> web.Response | None:
        """The subrequest's 401 for a 402 reused within its window (a flood's: see
        gateway/pipeline/challenge_cache.py), made and encoded once; None when
        nginx cannot answer it itself (it goes sealed) or the call is not a subrequest."""
        answer = _reused_answer(rendered, decision) if self.style == "subrequest" else None
        return None if answer is None else answer.again()

    def to_proxy(self, response: web.StreamResponse) -> bool:
        """True for an answer only the proxy reads, never a client: an allow (every proxy
        copies named headers from it onto the upstream request) and whatever nginx's
        subrequest gets (variables for its own locations; a sealed refusal reaches the
        client through the render call): it needs none of the headers meant for browsers."""
        return self.style == "subrequest" or 200 <= response.status < 300

    @staticmethod
    def hand_off() -> web.Response:
        """403 to nginx: send this request through popgate inline (its route asks for it)."""
        headers = {"Cache-Control": "no-store", "X-Accel-Expires": "0", DECISION_HEADER: "inline"}
        return web.Response(status=403, headers=headers)

    @staticmethod
    async def render(request: web.BaseRequest, sealer: Sealer, now: float) -> web.Response:
        """The answer the auth call sealed, unchanged; 503 (retry) when it is stale or not ours."""
        sealed = request.get(SEALED_KEY)
        if sealed is not None:
            token = sealed
        else:
            length = request.content_length
            token = b"" if length is None or length > MAX_SEALED else await request.read()
        response = sealer.open(token.decode("ascii", "replace"), now) if token else None
        if response is not None:
            return response
        return problem(
            request,
            503,
            "verdict_expired",
            "Retry",
            "The verdict for this request could not be rendered; retry the request.",
            headers={"Retry-After": "1"},
        )


class ForProxy(Encoded):
    """An answer already in the shape the proxy's call takes (:meth:`AuthCall.finish` leaves it)."""


@functools.lru_cache(maxsize=1024)
def _reused_answer(rendered: Rendered, decision: str) -> ForProxy | None:
    """The 401 for a reused 402, encoded (a pure function of its bytes: remembered)."""
    plain = plain_answer(web.Response(status=402, body=rendered.body, headers=rendered.headers))
    if plain is None:
        return None
    answer = ForProxy(status=401, headers=_refusal_headers(decision) | plain)
    own_headers(answer, browsers=False)
    return answer.fix()


def _refusal_headers(decision: str) -> dict[str, str]:
    return {"Cache-Control": "no-store", "X-Accel-Expires": "0", DECISION_HEADER: decision or "error"}


def plain_answer(response: web.Response) -> dict[str, str] | None:
    """A problem+json refusal nginx can answer itself (``return <status> $body`` plus the
    listed headers, see deploy/forward-auth/nginx-popgate-auth.conf): its status, one-line
    ASCII body and headers as ``X-Popgate-Status``/``-Body``/``-R-<name>``. None for anything
    else (the HTML page, other headers or statuses): that goes sealed to the render call."""
    body = response.body
    if response.status not in PLAIN_STATUSES or response.content_type != "application/problem+json":
        return None
    if not isinstance(body, bytes) or len(body) > PLAIN_MAX or not body.isascii() or b"\n" in body:
        return None
    out = {"X-Popgate-Status": str(response.status), "X-Popgate-Body": body.decode()}
    for name, value in response.headers.items():
        low = name.lower()
        if low in ("content-type", "content-length"):
            continue
        if low not in PLAIN_HEADERS or f"X-Popgate-R-{low}" in out or "\r" in value or "\n" in value:
            return None
        out[f"X-Popgate-R-{low}"] = value
    return out


def auth_call(request: web.BaseRequest, trusted: tuple[Network, ...]) -> AuthCall:
    """A forward-auth call: Forbidden for any caller but a trusted proxy."""
    peer = parse_ip(request.remote or "")
    if peer is None or not is_trusted(peer, trusted):
        raise Forbidden(
            "forward-auth call from a peer outside trusted_proxies",
            reason="untrusted_caller",
            public="The forward-auth endpoint answers only the configured trusted proxies.",
        )
    style = request.headers.get(STYLE_HEADER, "").strip().lower()
    return AuthCall(style if style in STYLES else "")


def original_request(request: web.BaseRequest, client: IPAddress) -> web.BaseRequest:
    """The original request behind a trusted forward-auth call; BadRequest for
    headers that do not describe one."""
    headers = request.headers
    method, uri, host, proto = original_target(headers, request.method, request.raw_path, request.scheme)
    path, _, query = uri.partition("?")
    return request.clone(
        method=method,
        rel_url=URL.build(path=path, query_string=query, encoded=True),
        headers=original_headers(headers, host),
        scheme=proto,
        host=host,
        remote=str(client),
    )


def original_target(
    headers: CIMultiDictProxy[str], method: str, raw_path: str, scheme: str
) -> tuple[str, str, str, str]:
    """``(method, uri, host, proto)`` of the request behind an auth call (its
    headers, method, target and scheme); BadRequest for headers that describe none."""
    style = headers.get(STYLE_HEADER, "").strip().lower()
    if style not in STYLES:
        raise BadRequest(
            f"{STYLE_HEADER}: {style!r}", reason="bad_forward_auth", public=f"Bad {STYLE_HEADER}."
        )
    method = _one(headers, "X-Forwarded-Method") or method
    suffix = raw_path[len(AUTH_PATH) :]
    uri = _one(headers, "X-Forwarded-Uri") or (suffix if suffix.startswith("/") else "")
    host = _one(headers, "X-Forwarded-Host") or headers.get("Host", "")
    proto = (_one(headers, "X-Forwarded-Proto") or scheme).split(",")[0].strip().lower()
    if not uri:
        raise BadRequest("no X-Forwarded-Uri", reason="bad_forward_auth", public="X-Forwarded-Uri required.")
    for name, value, shape in (("Method", method, METHOD), ("Uri", uri, URI), ("Host", host, HOST)):
        if not shape.fullmatch(value):
            raise BadRequest(
                f"X-Forwarded-{name}: malformed ({len(value)} chars)",
                reason="bad_forward_auth",
                public=f"Malformed X-Forwarded-{name}.",
            )
    if proto not in ("http", "https"):
        raise BadRequest(f"proto {proto!r}", reason="bad_forward_auth", public="Malformed X-Forwarded-Proto.")
    return method.upper(), uri, host, proto


def original_headers(headers: CIMultiDictProxy[str], host: str) -> CIMultiDict[str]:
    """The client's own headers from an auth call's: what describes the call dropped."""
    original: CIMultiDict[str] = CIMultiDict(headers)  # a C copy, then drop what is not the client's
    for name in DROP:
        original.popall(name, None)
    original["Host"] = host
    return original


def _one(headers: CIMultiDictProxy[str], name: str) -> str:
    """A forward-auth header's value; several copies are refused (ambiguous)."""
    values = headers.getall(name, ())
    if len(values) > 1:
        raise BadRequest(
            f"{len(values)} {name} headers", reason="bad_forward_auth", public=f"Repeated {name}."
        )
    return str(values[0]).strip() if values else ""
