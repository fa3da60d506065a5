"""popgate session tokens on requests: ``Authorization: PoP <token>`` or a cookie."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from popgate.gateway.pipeline.context import Attestation, Context
from popgate.gateway.stores.base import Store, key
from popgate.gateway.stores.failure import FailurePolicy
from popgate.verifiers.session import InvalidSession, Session, SessionCodec

Binder = Callable[[Context, Session], Awaitable[None]]


def cookie_value(header: str, name: str) -> str | None:
    """Find cookie ``name`` in a Cookie header without parsing all of it."""
    target = name + "="
    start = 0
    while True:
        i = header.find(target, start)
        if i < 0:
            return None
        if i == 0 or header[i - 1] in "; \t":
            end = header.find(";", i)
            value = header[i + len(target) : end if end >= 0 else None].strip()
            return value.strip('"') or None
        start = i + 1


class SessionScheme:
    """Verifies session tokens; one HMAC on the hot path, no store round trip.

    Budgeted sessions (``b`` claim) cost one store increment per request;
    key-bound sessions (``k`` claim) must satisfy a registered binder (e.g.
    an RFC 9421 request signature by the bound key).
    """

    name = "session"

    def __init__(self, codec: SessionCodec, cookie_name: str, store: Store, failure: FailurePolicy) -> None:
        self.codec = codec
        self.cookie_name = cookie_name
        self.store = store
        self.failure = failure
        self.binders: dict[str, Binder] = {}

    def extract(self, request: web.BaseRequest) -> str | None:
        headers = request.headers
        auth = headers.get("Authorization")
        if auth is not None and auth[:4].lower() == "pop ":
            return auth[4:].strip()
        cookie = headers.get("Cookie")
        if cookie is not None:
            return cookie_value(cookie, self.cookie_name)
        return None

    async def verify(self, ctx: Context, evidence: Any) -> Attestation:
        session = self.codec.verify(str(evidence), ctx.now)
        if not session.covers(ctx.target.path):
            raise InvalidSession(reason="session_out_of_scope", detail=session.scope)
        if session.binding is not None:
            kind = session.binding.split(":", 1)[0]
            binder = self.binders.get(kind)
            if binder is None:
                raise InvalidSession(detail=f"no binder for {kind}")
            await binder(ctx, session)
        if session.budget is not None:
            used = await self.failure.guard(
                "budget",
                self.store.incr(key("budget", session.token_id), 1, max(1.0, session.expires - ctx.now)),
                0,
            )
            if used > session.budget:
                raise InvalidSession(reason="session_budget_spent", detail=str(session.budget))
        return Attestation(session.klass, session.subject, session.evidence or "session", session=session)
