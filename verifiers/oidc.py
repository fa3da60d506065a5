"""OIDC id_token verification (PyJWT for the signature, our rules for the rest).

Rules, stricter than a generic JWT library's defaults:

* the header is parsed by us first: ``alg`` must be in the provider's allow
  list (RS256 by default; ``none``/HS* never), ``kid`` is required, and
  ``jwk``/``jku``/``x5u``/``x5c``/``crit`` headers are refused outright;
* the provider is chosen by the exact ``iss`` string; the key by ``kid`` from
  that provider's JWKS (:class:`verifiers.jwks.JwksCache`); the key's type
  must fit ``alg`` (no HS/RS confusion: an RSA key object is never an HMAC
  secret);
* ``aud`` must be one string (arrays are refused, as zkLogin does) and one of
  the provider's audiences; ``exp``, ``iat`` (and ``nbf`` when present) are
  checked against the caller's ``now`` with the provider's leeway, and the
  token may be at most ``max_token_age`` seconds old.

Every failure raises :class:`verifiers.errors.VerificationError` with one of:
``malformed``, ``bad_algorithm``, ``wrong_issuer``, ``unknown_kid``,
``jwks_unavailable``, ``bad_signature``, ``wrong_audience``, ``expired``,
``not_yet_valid``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.jwks import JwksCache, ProviderConfig

__all__ = ["OidcClaims", "OidcVerifier", "decode_segment", "parse_header"]

MAX_TOKEN_BYTES = 16 * 1024
_FORBIDDEN_HEADERS = frozenset({"jwk", "jku", "x5u", "x5c", "crit"})
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey
_KEY_TYPES: dict[str, tuple[type[PublicKey], ...]] = {
    "RS": (rsa.RSAPublicKey,),
    "PS": (rsa.RSAPublicKey,),
    "ES": (ec.EllipticCurvePublicKey,),
    "Ed": (ed25519.Ed25519PublicKey,),
}


@dataclass(frozen=True)
class OidcClaims:
    """A verified id_token: the identifying claims plus the full payload."""

    iss: str
    sub: str
    aud: str
    iat: int
    exp: int
    nonce: str | None
    kid: str
    claims: Mapping[str, Any]


def decode_segment(seg: str) -> bytes:
    """Strict base64url (no padding, URL alphabet only). Raises Malformed."""
    if not seg or len(seg) % 4 == 1 or "=" in seg or "+" in seg or "/" in seg:
        raise Malformed(detail="bad base64url segment")
    try:
        raw = base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4))
    except (binascii.Error, ValueError) as exc:
        raise Malformed(detail="bad base64url segment") from exc
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode() != seg:
        raise Malformed(detail="non-canonical base64url")
    return raw


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        obj = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise Malformed(detail="segment is not JSON") from exc
    if not isinstance(obj, dict):
        raise Malformed(detail="segment is not a JSON object")
    return obj


def parse_header(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a compact JWS and return (header, unverified payload).

    Raises Malformed for anything but three strict base64url segments of JSON
    objects, a missing ``kid``/``alg``, or a forbidden header parameter.
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
        raise Malformed(detail="token missing or too large")
    parts = token.split(".")
    if len(parts) != 3:
        raise Malformed(detail="not a compact JWS")
    header = _json_object(decode_segment(parts[0]))
    payload = _json_object(decode_segment(parts[1]))
    if not parts[2]:
        raise VerificationError("bad_algorithm", "unsigned token")
    forbidden = _FORBIDDEN_HEADERS.intersection(header)
    if forbidden:
        raise Malformed(detail=f"forbidden header parameter(s) {sorted(forbidden)}")
    if not isinstance(header.get("alg"), str):
        raise Malformed(detail="alg missing")
    return header, payload


def _int_claim(payload: Mapping[str, Any], name: str) -> int:
    v = payload.get(name)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise Malformed(detail=f"claim {name} missing or not a number")
    return int(v)


class OidcVerifier:
    """Verify id_tokens from a fixed set of providers (built once at start-up)."""

    def __init__(self, providers: Iterable[ProviderConfig], jwks: JwksCache) -> None:
        self._providers = {p.issuer: p for p in providers}
        if not self._providers:
            raise ValueError("no OIDC providers configured")
        self._jwks = jwks

    def provider(self, issuer: str) -> ProviderConfig:
        """Return the provider for ``issuer``; raises VerificationError(wrong_issuer)."""
        p = self._providers.get(issuer)
        if p is None:
            raise VerificationError("wrong_issuer", f"issuer {issuer!r} not configured")
        return p

    async def verify(self, token: str, *, now: float, require_nonce: bool = True) -> OidcClaims:
        """Verify ``token`` at time ``now`` (unix seconds); return its claims.

        Raises VerificationError (reasons in the module docstring).
        """
        header, unverified = parse_header(token)
        alg = header["alg"]
        iss = unverified.get("iss")
        if not isinstance(iss, str):
            raise Malformed(detail="iss missing")
        provider = self.provider(iss)
        if alg not in provider.algorithms:
            raise VerificationError("bad_algorithm", f"alg {alg!r} not allowed")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Malformed(detail="kid missing")
        jwk = await self._jwks.get_key(provider, kid, now)
        if jwk.alg is not None and jwk.alg != alg:
            raise VerificationError("bad_algorithm", "alg does not match the JWK")
        if not isinstance(jwk.key, _KEY_TYPES.get(alg[:2], ())):
            raise VerificationError("bad_algorithm", "key type does not fit alg")
        try:
            payload_raw = jwt.PyJWS().decode(token, key=jwk.key, algorithms=[alg])
        except jwt.InvalidSignatureError as exc:
            raise VerificationError("bad_signature", str(exc)) from exc
        except jwt.InvalidAlgorithmError as exc:
            raise VerificationError("bad_algorithm", str(exc)) from exc
        except jwt.PyJWTError as exc:
            raise Malformed(detail=str(exc)) from exc
        payload = _json_object(payload_raw)
        return self._check_claims(provider, payload, kid, now, require_nonce)

    @staticmethod
    def _check_claims(
        provider: ProviderConfig,
        payload: dict[str, Any],
        kid: str,
        now: float,
        require_nonce: bool,
    ) -> OidcClaims:
        for name in provider.required_claims + (("nonce",) if require_nonce else ()):
            if name not in payload:
                raise Malformed(detail=f"claim {name} missing")
        if payload.get("iss") != provider.issuer:
            raise VerificationError("wrong_issuer", "iss changed")
        aud = payload.get("aud")
        if not isinstance(aud, str) or aud not in provider.audiences:
            raise VerificationError("wrong_audience", "aud not a configured audience string")
        sub = payload.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Malformed(detail="sub not a string")
        nonce = payload.get("nonce")
        if nonce is not None and not isinstance(nonce, str):
            raise Malformed(detail="nonce not a string")
        exp, iat = _int_claim(payload, "exp"), _int_claim(payload, "iat")
        leeway = provider.leeway
        if now >= exp + leeway:
            raise VerificationError("expired", "exp passed")
        if iat > now + leeway:
            raise VerificationError("not_yet_valid", "iat in the future")
        if "nbf" in payload and _int_claim(payload, "nbf") > now + leeway:
            raise VerificationError("not_yet_valid", "nbf in the future")
        if now - iat > provider.max_token_age + leeway:
            raise VerificationError("expired", "token older than max_token_age")
        return OidcClaims(
            iss=provider.issuer, sub=sub, aud=aud, iat=iat, exp=exp, nonce=nonce, kid=kid, claims=payload
        )
