"""``popgate verify webbotauth``: ``{"method", "url", "headers": {...}, "jwks": {...},
"now", "body"?}`` -> ``keyid``, ``subject``, ``agent``. Keys are the JWKS given
(no directory fetches); nonces are spent in the run's shared store
(``env.spend``), so a repeated request in one run gives ``replayed``."""

from __future__ import annotations

from typing import Any

from popgate.verifiers.errors import Malformed
from popgate.verifiers.httpsig import RequestView
from popgate.verifiers.webbotauth import WebBotAuthVerifier, static_keys_from_jwks


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    method, url, headers = case["method"], case["url"], case["headers"]
    if not isinstance(method, str) or not isinstance(url, str) or not isinstance(headers, dict):
        raise Malformed(detail="method/url must be strings, headers an object")
    body = case.get("body")
    view = RequestView.build(method, url, headers, body.encode() if isinstance(body, str) else None)
    verifier = WebBotAuthVerifier(static=static_keys_from_jwks(case["jwks"]))
    att = await verifier.verify(view, now=env.now)
    if att.spend is not None:
        await env.spend(att.spend)
    return {"keyid": att.keyid, "subject": att.subject, "agent": att.agent}
