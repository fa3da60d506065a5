"""``popgate verify session``: ``{"token": ..., "now": unix_seconds}`` with keys from --config."""

from __future__ import annotations

from typing import Any

from popgate.verifiers.errors import VerificationError
from popgate.verifiers.session import SessionCodec


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    if env.config is None:
        raise VerificationError("no_keys", "popgate verify session needs --config with [sessions] keys")
    token = case["token"]
    if not isinstance(token, str):
        raise TypeError("token must be a string")
    sessions = env.config.sessions
    codec = SessionCodec(sessions.keys, sessions.signing_kid)
    s = codec.verify(token, env.now)
    return {"class": s.klass, "subject": s.subject, "expires": s.expires, "scope": s.scope}
