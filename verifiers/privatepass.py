"""Privacy Pass, publicly verifiable tokens (type ``0x0002``, blind RSA).

Wire formats from RFC 9577 (the ``PrivateToken`` HTTP authentication scheme)
and RFC 9578 §5 (issuance protocol 2, RSA-BSSA from RFC 9474):

* ``TokenChallenge`` = token_type(2) ‖ issuer_name<1..2^16-1> ‖
  redemption_context<0..32> (0 or 32 bytes) ‖ origin_info<0..2^16-1>;
* ``Token`` = token_type(2) ‖ nonce(32) ‖ challenge_digest(32) ‖
  token_key_id(32) ‖ authenticator(256), where challenge_digest =
  SHA-256(TokenChallenge), token_key_id = SHA-256(the issuer's public key,
  a DER SubjectPublicKeyInfo with the RSASSA-PSS OID) and the authenticator is
  an RSASSA-PSS signature (SHA-384, MGF1-SHA-384, 48-byte salt) over the first
  98 bytes (``token_input``).

The token carries only the digest of its challenge: the caller passes the
digests of every challenge it would have issued (:func:`challenge_digest`),
which checks issuer name, redemption context and origin info at once.
A verified token returns the :class:`~verifiers.spend.Spend` of its nonce
(spent once per key). Pure: no I/O, no store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.spend import Spend

TOKEN_TYPE = 0x0002
NK = 256  # RSA-2048: the authenticator's length
TOKEN_LEN = 2 + 32 + 32 + 32 + NK
MAX_HEADER = 4096
_PSS = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
_OID_RSA = bytes.fromhex("2a864886f70d010101")  # 1.2.840.113549.1.1.1 rsaEncryption
_OID_PSS = bytes.fromhex("2a864886f70d01010a")  # 1.2.840.113549.1.1.10 id-RSASSA-PSS
_AUTH_PARAM = re.compile(r'\s*([A-Za-z0-9_-]+)\s*=\s*("([^"\\]*)"|[^\s,"]*)\s*(?:,|\Z)')


class InvalidToken(VerificationError):
    """Any way a token fails its signature or key (one reason: no oracle)."""

    reason = "invalid_token"


@dataclass(frozen=True, slots=True)
class TokenChallenge:
    """RFC 9577 §2.1 TokenChallenge."""

    issuer_name: str
    redemption_context: bytes = b""
    origin_info: str = ""
    token_type: int = TOKEN_TYPE

    def encode(self) -> bytes:
        """The TLS-presentation bytes; raises ValueError on out-of-range fields."""
        issuer, origin = self.issuer_name.encode(), self.origin_info.encode()
        if not 1 <= len(issuer) < 1 << 16 or len(origin) >= 1 << 16:
            raise ValueError("issuer_name or origin_info length")
        if len(self.redemption_context) not in (0, 32):
            raise ValueError("redemption_context must be 0 or 32 bytes")
        return b"".join(
            (
                self.token_type.to_bytes(2, "big"),
                len(issuer).to_bytes(2, "big"),
                issuer,
                bytes([len(self.redemption_context)]),
                self.redemption_context,
                len(origin).to_bytes(2, "big"),
                origin,
            )
        )

    def digest(self) -> bytes:
        """challenge_digest = SHA-256(TokenChallenge)."""
        return hashlib.sha256(self.encode()).digest()


@dataclass(frozen=True, slots=True)
class Token:
    """RFC 9577 §2.2 Token of type 0x0002."""

    nonce: bytes
    challenge_digest: bytes
    token_key_id: bytes
    authenticator: bytes

    @property
    def token_input(self) -> bytes:
        return TOKEN_TYPE.to_bytes(2, "big") + self.nonce + self.challenge_digest + self.token_key_id


@dataclass(frozen=True, slots=True)
class IssuerKey:
    """One issuer public key: its SPKI bytes (as published), id and RSA key."""

    spki: bytes
    key_id: bytes
    public_key: rsa.RSAPublicKey

    @property
    def token_key(self) -> str:
        """base64url of the SPKI, as ``token-key`` and issuer directories carry it."""
        return b64u(self.spki)


def b64u(raw: bytes) -> str:
    """base64url with padding, as RFC 9577's examples and privacypass-ts write it."""
    return base64.urlsafe_b64encode(raw).decode("ascii")


def b64u_decode(text: str) -> bytes:
    """base64url (or standard base64), padding optional; raises Malformed."""
    if not isinstance(text, str) or len(text) > 8192:
        raise Malformed(detail="base64 value")
    t = text.strip().rstrip("=").replace("+", "-").replace("/", "_")
    try:
        return base64.urlsafe_b64decode(t + "=" * (-len(t) % 4))
    except (binascii.Error, ValueError):
        raise Malformed(detail="not base64url") from None


def parse_challenge(raw: bytes) -> TokenChallenge:
    """Decode a TokenChallenge; raises Malformed."""
    try:
        token_type = int.from_bytes(raw[0:2], "big")
        n = int.from_bytes(raw[2:4], "big")
        issuer = raw[4 : 4 + n]
        pos = 4 + n
        rc_len = raw[pos]
        rc = raw[pos + 1 : pos + 1 + rc_len]
        pos += 1 + rc_len
        m = int.from_bytes(raw[pos : pos + 2], "big")
        origin = raw[pos + 2 : pos + 2 + m]
        end = pos + 2 + m
    except IndexError:
        raise Malformed(detail="challenge truncated") from None
    if len(raw) < 4 or end != len(raw) or len(issuer) != n or n == 0 or len(origin) != m:
        raise Malformed(detail="challenge length")
    if rc_len not in (0, 32) or len(rc) != rc_len:
        raise Malformed(detail="redemption_context length")
    try:
        return TokenChallenge(issuer.decode(), rc, origin.decode(), token_type)
    except UnicodeDecodeError:
        raise Malformed(detail="challenge names not UTF-8") from None


def parse_token(raw: bytes) -> Token:
    """Decode a type-0x0002 Token; raises Malformed (``unsupported_token_type`` for others)."""
    if len(raw) >= 2 and int.from_bytes(raw[:2], "big") != TOKEN_TYPE:
        raise VerificationError("unsupported_token_type", f"token type {raw[:2].hex()}")
    if len(raw) != TOKEN_LEN:
        raise Malformed(detail=f"token length {len(raw)}")
    return Token(raw[2:34], raw[34:66], raw[66:98], raw[98:])


def parse_auth_params(value: str, scheme: str = "PrivateToken") -> dict[str, str]:
    """The auth-params of one ``<scheme> k=v, k="v"`` credential or challenge
    (names lower-cased); raises Malformed."""
    if len(value) > MAX_HEADER:
        raise Malformed(detail="header too long")
    head, _, rest = value.strip().partition(" ")
    if head.lower() != scheme.lower():
        raise Malformed(detail=f"not a {scheme} credential")
    params: dict[str, str] = {}
    pos, rest = 0, rest.strip()
    while pos < len(rest):
        m = _AUTH_PARAM.match(rest, pos)
        if m is None or m.end() == pos:
            raise Malformed(detail="auth-param syntax")
        name = m.group(1).lower()
        if name in params:
            raise Malformed(detail=f"duplicate {name}")
        params[name] = m.group(3) if m.group(3) is not None else m.group(2)
        pos = m.end()
    return params


def token_from_authorization(value: str) -> Token:
    """``Authorization: PrivateToken token=<base64url>`` → Token; raises Malformed."""
    params = parse_auth_params(value)
    if "token" not in params:
        raise Malformed(detail="no token parameter")
    return parse_token(b64u_decode(params["token"]))


def _der(raw: bytes, pos: int, tag: int) -> tuple[bytes, int]:
    """One DER TLV of ``tag`` at ``pos``: (contents, next position); raises Malformed."""
    if pos + 2 > len(raw) or raw[pos] != tag:
        raise Malformed(detail="DER tag")
    n, pos = raw[pos + 1], pos + 2
    if n & 0x80:
        k = n & 0x7F
        if k == 0 or k > 4 or pos + k > len(raw):
            raise Malformed(detail="DER length")
        n, pos = int.from_bytes(raw[pos : pos + k], "big"), pos + k
    if pos + n > len(raw):
        raise Malformed(detail="DER truncated")
    return raw[pos : pos + n], pos + n


def load_token_key(spki: bytes) -> IssuerKey:
    """An issuer key from its SubjectPublicKeyInfo (RSASSA-PSS or rsaEncryption
    OID, RSA-2048); raises Malformed."""
    body, end = _der(spki, 0, 0x30)
    if end != len(spki):
        raise Malformed(detail="trailing bytes after key")
    alg, pos = _der(body, 0, 0x30)
    oid, _ = _der(alg, 0, 0x06)
    if oid not in (_OID_RSA, _OID_PSS):
        raise Malformed(detail="not an RSA key")
    bits, _ = _der(body, pos, 0x03)
    if not bits or bits[0] != 0:
        raise Malformed(detail="key bit string")
    rsa_key, _ = _der(bits[1:], 0, 0x30)
    n_raw, pos = _der(rsa_key, 0, 0x02)
    e_raw, _ = _der(rsa_key, pos, 0x02)
    n, e = int.from_bytes(n_raw, "big"), int.from_bytes(e_raw, "big")
    if n.bit_length() != NK * 8 or e < 3 or e % 2 == 0:
        raise Malformed(detail="RSA-2048 key required")
    try:
        public = rsa.RSAPublicNumbers(e, n).public_key()
    except ValueError:
        raise Malformed(detail="RSA key") from None
    return IssuerKey(spki, hashlib.sha256(spki).digest(), public)


def verify_token(
    token: Token,
    keys: Mapping[bytes, IssuerKey],
    accepted: Collection[bytes],
    *,
    spend_ttl: float,
) -> Spend:
    """Check ``token`` against the issuer ``keys`` (by token_key_id) and the
    ``accepted`` challenge digests; return the Spend of its nonce.

    Raises VerificationError: ``wrong_challenge`` (a token for another issuer,
    origin or redemption context), ``unknown_key``, ``invalid_token``.
    """
    if token.challenge_digest not in accepted:
        raise VerificationError("wrong_challenge", "challenge digest matches no challenge of ours")
    key = keys.get(token.token_key_id)
    if key is None:
        raise VerificationError("unknown_key", token.token_key_id.hex()[:16])
    try:
        key.public_key.verify(token.authenticator, token.token_input, _PSS, hashes.SHA384())
    except InvalidSignature:
        raise InvalidToken(detail="bad authenticator") from None
    ident = hashlib.sha256(token.token_key_id + token.nonce).hexdigest()
    return Spend("privatepass", ident, spend_ttl, detail="token already redeemed")
