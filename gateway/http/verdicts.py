"""Forward-auth verdicts: when an edge may reuse an allow, and sealed refusals.

**Reuse.** An allow may be reused by the edge (nginx ``proxy_cache`` on the
auth call, keyed by method, host, URI, ``Authorization`` and ``Cookie``) only
when nothing but those decided it: the one piece of evidence is a session
token with no request budget and no binding (no per-request signature, no
network check), no spend, throttle step, charge or payment happened, no other
evidence was presented, and the policy decided from method, host and path
alone. It is reusable until the session expires, at most ``cache_ttl``
seconds. :func:`reuse_seconds` says for how long; 0 means "ask every time".

**Sealed refusals.** nginx's ``auth_request`` keeps only the status of the
auth answer, so popgate answers a refusal 401 and nginx asks again to render
it (unless it can return a problem+json answer itself, see
:func:`gateway.http.forward_auth.plain_answer`). Deciding twice would count a
throttle or budget twice; instead the 401 carries the full answer (status,
headers, body), MAC-signed with a key derived from the session signing key
(zlib-compressed above 4 KiB), for a few seconds. nginx sends it back as the
render call's body and popgate returns it unchanged, without running the
pipeline again.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import zlib
from collections.abc import Callable, Mapping

from aiohttp import web
from multidict import CIMultiDict

from popgate.gateway.pipeline.context import Context

SEAL_TTL = 10  # seconds between the auth call and its render call
MAX_SEALED = 65536  # bytes of a sealed answer nginx hands back
COMPRESS_OVER = 4096  # bytes: a 402 problem+json goes as is, the HTML page compressed
_SKIP = frozenset({"content-length", "date", "server", "transfer-encoding", "connection"})
_LABEL = b"popgate forward-auth verdict v1"


def reuse_seconds(ctx: Context, bound: int, target_decides: Callable[[Context], bool] | None) -> int:
    """Seconds the edge may reuse this allow (0: not reusable); see the module doc."""
    if bound <= 0 or ctx.pending is not None or ctx.charge is not None or ctx.charged:
        return 0
    if ctx.response_headers or ctx.rejections or len(ctx.attestations) != 1 or len(ctx.evidence) != 1:
        return 0
    session = ctx.attestations[0].session
    if "session" not in ctx.evidence or session is None:
        return 0
    if session.budget is not None or session.binding is not None:
        return 0
    decided = target_decides(ctx) if target_decides is not None else True
    return max(0, min(bound, int(session.expires - ctx.now))) if decided else 0


class Sealer:
    """Seals refusals for the render call and opens them; keys derived per kid."""

    def __init__(self, keys: Mapping[str, bytes], signing_kid: str) -> None:
        self.kid = signing_kid
        self.keys = {kid: hmac.new(secret, _LABEL, hashlib.sha256).digest() for kid, secret in keys.items()}

    def seal(self, response: web.Response, now: float) -> str:
        """The whole answer as ``v1.<kid>.<expires>.<payload>.<mac>`` (base64url; the
        payload zlib-compressed when that saves much, flagged by a leading ``z``)."""
        body = response.body if isinstance(response.body, bytes) else b""
        head = "\n".join(
            [
                str(response.status),
                *(f"{k}: {v}" for k, v in response.headers.items() if k.lower() not in _SKIP),
            ]
        )
        raw = head.encode() + b"\n\n" + body
        payload = "z" + _b64(zlib.compress(raw, 1)) if len(raw) > COMPRESS_OVER else _b64(raw)
        signed = f"v1.{self.kid}.{int(now) + SEAL_TTL}.{payload}"
        return f"{signed}.{_b64(self._mac(self.kid, signed))}"

    def open(self, token: str, now: float) -> web.Response | None:
        """The sealed answer, or None when the seal is malformed, forged or stale."""
        parts = token.strip().split(".")
        if len(parts) != 5 or parts[0] != "v1" or parts[1] not in self.keys or not parts[2].isdigit():
            return None
        signed = ".".join(parts[:4])
        try:
            mac = base64.urlsafe_b64decode(parts[4] + "==")
            if not hmac.compare_digest(mac, self._mac(parts[1], signed)) or int(parts[2]) < now:
                return None
            payload = parts[3]
            raw = base64.urlsafe_b64decode(payload.lstrip("z") + "==")
            if payload.startswith("z"):
                raw = zlib.decompressobj().decompress(raw, 1 << 20)
        except (ValueError, zlib.error):
            return None
        head, _, body = raw.partition(b"\n\n")
        status, *fields = head.decode().split("\n")
        headers: CIMultiDict[str] = CIMultiDict()
        for line in fields:
            name, _, value = line.partition(": ")
            headers.add(name, value)
        return web.Response(status=int(status), body=body, headers=headers)

    def _mac(self, kid: str, signed: str) -> bytes:
        return hmac.digest(self.keys[kid], signed.encode(), "sha256")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
