"""``popgate verify delegation`` (``--config``: ``[sessions]`` keys, ``[delegation]`` windows):
``{"method", "url", "headers": {...}, "body"?, "now"?}`` -> ``backed_by``, ``keyid``,
``scope``, ``expires``, ``quota``.

The request must carry ``Authorization: PoP <delegation>`` and an RFC 9421
signature by the delegated key (``keyid`` = the delegation id) covering
``@method``, ``@target-uri`` (and ``content-digest`` with a body), within the
delegation's scope and lifetime. What only the gateway's store knows, the
person's daily quota and revocations, is not checked here; signature nonces
are spent in the run's shared store.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from popgate.verifiers.delegation import binding_key
from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.httpsig import (
    Candidate,
    Policy,
    RequestView,
    VerifyingKey,
    bound_request_policy,
    verify_message,
)
from popgate.verifiers.session import InvalidSession, SessionCodec


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    if env.config is None:
        raise VerificationError("no_keys", "popgate verify delegation needs --config with [sessions] keys")
    method, url, headers = case["method"], case["url"], case["headers"]
    if not isinstance(method, str) or not isinstance(url, str) or not isinstance(headers, dict):
        raise Malformed(detail="method/url must be strings, headers an object")
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    if not isinstance(auth, str) or auth[:4].lower() != "pop ":
        raise Malformed(detail="no Authorization: PoP <delegation>")
    sessions = env.config.sessions
    session = SessionCodec(sessions.keys, sessions.signing_kid).verify(auth[4:].strip(), env.now)
    if session.klass != "backed-agent" or session.binding is None:
        raise InvalidSession(reason="not_a_delegation", detail=session.klass)
    if not session.covers(urlsplit(url).path or "/"):
        raise InvalidSession(reason="session_out_of_scope", detail=session.scope)
    if not any(k.lower() == "signature-input" for k in headers):
        raise VerificationError("signature_required", "delegation without a signature")
    key = binding_key(session.binding)
    body = case.get("body")
    view = RequestView.build(method, url, headers, body.encode() if isinstance(body, str) else None)
    policy = _policy(env.config.features.delegation)

    async def resolve(_: Candidate) -> VerifyingKey:
        return key

    verified = await verify_message(
        view, resolve_key=resolve, policy=policy, now=env.now, keyid=session.token_id
    )
    if verified.spend is not None:
        await env.spend(verified.spend)
    return {
        "backed_by": session.subject,
        "keyid": session.token_id,
        "scope": session.scope,
        "expires": session.expires,
        "quota": session.budget,
    }


def _policy(d: Any) -> Policy:
    """The gateway's signature rule for delegated agents, from ``[delegation]`` (or its defaults)."""
    return bound_request_policy(
        window=d.signature_window if d is not None else 300,
        clock_skew=d.clock_skew if d is not None else 30,
        require_nonce=bool(d and d.require_nonce),
        replay_kind="deleg-sig",
    )
