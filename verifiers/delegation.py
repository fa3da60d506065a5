"""Delegations from a person to an agent key: the request a human sends and the
bounds a delegation must stay within. Pure: no I/O.

A delegation is a popgate session of class ``backed-agent`` whose subject is
the delegating human's pseudonym and whose binding is ``deleg:<base64url(flag
‖ public key)>`` (flag 0 Ed25519, 2 P-256 compressed, as zkLogin's ephemeral
keys): every request with it must be signed (RFC 9421) by that key.
:func:`parse_request` checks what the human asks for against the human's own
session (:func:`bounded`): a delegation never outlives it, never reaches
outside its scope and never gets more requests than its budget.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.httpsig import VerifyingKey
from popgate.verifiers.session import Session

BINDING = "deleg"
MAX_QUOTA = 10**9
MAX_ROUTES = 32
ROUTE_RE = re.compile(r"[A-Za-z0-9_.:/*-]{1,64}\Z")  # as policy rule names and routes


@dataclass(frozen=True, slots=True)
class DelegationRequest:
    """What a human asks for: the agent key (as a binding), scope, expiry, quota."""

    binding: str
    scope: str
    expires: int
    quota: int | None
    routes: tuple[str, ...] | None = None


def _b64u(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def key_binding(jwk: Any) -> str:
    """``deleg:<b64url(flag ‖ pk)>`` for an Ed25519 or P-256 JWK; raises Malformed."""
    if not isinstance(jwk, Mapping) or "d" in jwk:
        raise Malformed(detail="jwk must be a public JWK object (no private part)")
    vk = VerifyingKey.from_jwk(jwk)
    if vk.alg == "ed25519":
        raw = bytes([0]) + vk.key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    elif vk.alg == "ecdsa-p256-sha256" and isinstance(vk.key, ec.EllipticCurvePublicKey):
        raw = bytes([2]) + vk.key.public_bytes(Encoding.X962, PublicFormat.CompressedPoint)
    else:
        raise Malformed(detail="agent keys are Ed25519 or P-256")
    return f"{BINDING}:{_b64u(raw)}"


def binding_key(binding: str) -> VerifyingKey:
    """The verifying key named by a ``deleg:`` binding; raises Malformed."""
    kind, _, text = binding.partition(":")
    if kind != BINDING or not text:
        raise Malformed(detail="not a delegation binding")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise Malformed(detail="binding encoding") from None
    if len(raw) < 2 or raw[0] not in (0, 2):
        raise Malformed(detail="binding key flag")
    return VerifyingKey.from_sui_key(raw[0], raw[1:])


def _int(value: Any, name: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 53:
        return value
    raise Malformed(detail=f"{name} must be a non-negative integer")


def _routes(value: Any) -> tuple[str, ...] | None:
    """Optional policy route names the delegation is limited to; raises Malformed."""
    if value is None:
        return None
    if (
        not isinstance(value, list)
        or not 0 < len(value) <= MAX_ROUTES
        or not all(isinstance(r, str) and ROUTE_RE.match(r) for r in value)
    ):
        raise Malformed(detail=f"routes must be a list of 1-{MAX_ROUTES} policy route names")
    return tuple(value)


def parse_request(data: Mapping[str, Any], human: Session, now: float, max_ttl: int) -> DelegationRequest:
    """Validate a delegation request against the delegating ``human`` session.

    ``data``: ``jwk`` (required), ``scope`` (a path prefix, default the
    session's), ``routes`` (policy rule or route names, optional), ``expires``
    (unix seconds) or ``ttl`` (seconds; default: as long as the session and
    ``max_ttl`` allow), ``quota`` (requests, optional). Raises Malformed for
    bad input, VerificationError ``exceeds_session`` when it asks for more
    than the session has.
    """
    binding = key_binding(data.get("jwk"))
    scope = data.get("scope", human.scope)
    if not isinstance(scope, str) or not scope.startswith("/") or len(scope) > 512 or ".." in scope:
        raise Malformed(detail="scope must be a path prefix such as /api/")
    if "expires" in data and "ttl" in data:
        raise Malformed(detail="give expires or ttl, not both")
    if "expires" in data:
        expires = _int(data["expires"], "expires")
    else:
        ttl = _int(data["ttl"], "ttl") if "ttl" in data else min(max_ttl, human.expires - int(now))
        expires = int(now) + ttl
    routes = _routes(data.get("routes"))
    quota = data.get("quota")
    if quota is not None:
        quota = _int(quota, "quota")
        if not 1 <= quota <= MAX_QUOTA:
            raise Malformed(detail="quota out of range")
    request = DelegationRequest(binding, scope, expires, quota, routes)
    bounded(request, human, now, max_ttl)
    return request


def bounded(request: DelegationRequest, human: Session, now: float, max_ttl: int) -> None:
    """Raise VerificationError unless ``request`` stays within the ``human`` session:
    ``expired`` (no time left), ``exceeds_session`` (longer, wider or bigger)."""
    if request.expires <= now:
        raise VerificationError("expired", "delegation expiry in the past")
    if request.expires > human.expires:
        raise VerificationError("exceeds_session", "delegation would outlive the session that makes it")
    if request.expires - now > max_ttl:
        raise VerificationError("exceeds_session", "delegation longer than delegation.max_ttl")
    if not human.covers(request.scope.rstrip("/") or "/"):
        raise VerificationError("exceeds_session", "scope outside the session's scope")
    if human.budget is not None and (request.quota is None or request.quota > human.budget):
        raise VerificationError("exceeds_session", "quota beyond the session's budget")
