"""popgate session tokens: self-contained, MAC-signed, key-id'd, expiring.

Wire format (URL- and cookie-safe, no padding)::

    v1.<kid>.<payload>.<mac>

``payload`` is base64url(compact JSON) with the claims

    c  class (human | account | backed-agent | verified-agent | agent | unknown)
    s  pseudonymous subject (never a raw nullifier, e-mail or OIDC sub)
    i  issued-at, unix seconds        x  expiry, unix seconds
    p  scope: a path prefix the session is good for ("/" = everything)
    e  evidence kind that earned it (worldid, zklogin, puzzle, ...)
    k  optional key binding (thumbprint of a key that must sign requests)
    b  optional request budget (the gateway counts uses in the store)
    r  optional policy routes the session is limited to (a delegation's)

``mac`` is base64url(HMAC-SHA256(key[kid], "v1.<kid>.<payload>")). Several
keys are accepted (rotation); one signs. Verification is one HMAC, compared in
constant time, before the payload is even decoded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from dataclasses import dataclass

from popgate.verifiers.errors import Malformed, VerificationError

VERSION = "v1"
MAX_TOKEN_LEN = 2048
VERIFIED_MAX = 4096  # tokens remembered as verified (then the memory starts over)
CLASSES = frozenset({"human", "account", "backed-agent", "verified-agent", "agent", "unknown"})


class InvalidSession(VerificationError):
    """Any way a session token can be bad (one error type: no oracle)."""

    reason = "invalid_session"


class SessionExpired(InvalidSession):
    reason = "session_expired"


@dataclass(frozen=True, slots=True)
class Session:
    klass: str
    subject: str
    issued_at: int
    expires: int
    scope: str = "/"
    evidence: str = ""
    binding: str | None = None
    budget: int | None = None
    token_id: str = ""
    work: int = 0  # bits of the puzzle that bought the session (0: none)
    routes: tuple[str, ...] | None = None  # policy routes it is limited to (None: any)

    def covers(self, path: str) -> bool:
        """True when ``path`` lies inside this session's scope."""
        scope = self.scope
        return (
            scope == "/"
            or path == scope.rstrip("/")
            or path.startswith(scope if scope.endswith("/") else scope + "/")
        )


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionCodec:
    """Issues and verifies tokens with a keyring ``{kid: secret}``."""

    __slots__ = ("_keys", "_prefixes", "_signing_key", "_signing_kid", "_verified")

    def __init__(self, keys: dict[str, bytes], signing_kid: str) -> None:
        if signing_kid not in keys:
            raise ValueError(f"signing key id {signing_kid!r} is not in the keyring")
        self._keys = dict(keys)
        # Tokens whose MAC and payload this codec has checked (its keyring never changes): a
        # session holder's next request costs a lookup. Expiry is checked on every call.
        self._verified: dict[str, Session] = {}
        self._signing_kid = signing_kid
        self._signing_key = keys[signing_kid]

    def issue(
        self,
        *,
        klass: str,
        subject: str,
        now: float,
        ttl: int,
        scope: str = "/",
        evidence: str = "",
        binding: str | None = None,
        budget: int | None = None,
        work: int | None = None,
        routes: tuple[str, ...] | None = None,
    ) -> str:
        """Return a signed token; raises ValueError on an unknown class."""
        if klass not in CLASSES:
            raise ValueError(f"unknown class {klass!r}")
        claims: dict[str, object] = {
            "c": klass,
            "s": subject,
            "i": int(now),
            "x": int(now) + ttl,
            "p": scope,
            "e": evidence,
            "j": _b64e(os.urandom(9)),
        }
        if binding is not None:
            claims["k"] = binding
        if budget is not None:
            claims["b"] = budget
        if work is not None:
            claims["w"] = work
        if routes is not None:
            claims["r"] = list(routes)
        payload = _b64e(json.dumps(claims, separators=(",", ":")).encode())
        signed = f"{VERSION}.{self._signing_kid}.{payload}"
        mac = hmac.new(self._signing_key, signed.encode(), hashlib.sha256).digest()
        return f"{signed}.{_b64e(mac)}"

    def verify(self, token: str, now: float) -> Session:
        """Return the session in ``token``.

        Raises InvalidSession (reason ``invalid_session``) for any malformed,
        unknown-key or tampered token, SessionExpired when it has expired.
        ``detail`` says which, for logs.
        """
        session = self._verified.get(token)
        if session is None:
            session = self._check(token)
            if len(self._verified) >= VERIFIED_MAX:
                self._verified.clear()
            self._verified[token] = session
        if now >= session.expires:
            raise SessionExpired(detail="expired")
        return session

    def _check(self, token: str) -> Session:
        """The session in ``token`` when its MAC and claims are good (expiry aside)."""
        if len(token) > MAX_TOKEN_LEN:
            raise InvalidSession(detail="too long")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != VERSION:
            raise InvalidSession(detail="not a v1 token")
        kid = parts[1]
        key = self._keys.get(kid)
        if key is None:
            raise InvalidSession(detail="unknown key id")
        signed_len = len(parts[0]) + len(kid) + len(parts[2]) + 2
        try:
            mac = _b64d(parts[3])
            expected = hmac.digest(key, token[:signed_len].encode("ascii"), "sha256")
        except (binascii.Error, ValueError, UnicodeEncodeError):
            raise InvalidSession(detail="bad encoding") from None
        if not hmac.compare_digest(mac, expected):
            raise InvalidSession(detail="bad mac")
        try:
            claims = json.loads(_b64d(parts[2]))
            session = Session(
                klass=claims["c"],
                subject=claims["s"],
                issued_at=int(claims["i"]),
                expires=int(claims["x"]),
                scope=claims.get("p", "/"),
                evidence=claims.get("e", ""),
                binding=claims.get("k"),
                budget=claims.get("b"),
                token_id=claims.get("j", ""),
                work=int(claims.get("w", 0)),
                routes=tuple(str(r) for r in claims["r"]) if "r" in claims else None,
            )
        except (ValueError, KeyError, TypeError) as exc:
            # A valid MAC over a bad payload means our own bug or a leaked key.
            raise Malformed(detail=f"payload: {exc}") from None
        if session.klass not in CLASSES or not isinstance(session.subject, str):
            raise Malformed(detail="claims")
        return session


def keyed_subject(secret: bytes, kind: str, ident: str) -> str:
    """A stable pseudonym for ``ident``: never the identifier itself.

    HMAC-SHA256 under an operator secret, domain-separated by ``kind``, so the
    origin can count distinct clients without learning who they are.
    """
    digest = hmac.new(secret, f"popgate-subject:{kind}:{ident}".encode(), hashlib.sha256).digest()
    return f"{kind}:{_b64e(digest[:18])}"
