"""zkLogin-style attestation: an OIDC id_token whose ``nonce`` commits to an
ephemeral public key (Sui zkLogin's nonce), plus zkLogin address maths.

Formulas (checked against @mysten/sui 1.45.2 in tests/verifiers/test_zklogin*):

* nonce: ``v = int(ext_eph_pk, big-endian)``;
  ``h = poseidon([v >> 128, v mod 2^128, max_epoch, randomness])``;
  ``nonce = base64url_nopad((h mod 2^160).to_bytes(20, "big"))`` (27 chars).
* ``hash_ascii_str_to_field(s, n)``: s NUL-padded to n bytes, cut into 31-byte
  big-endian limbs from the end (the first limb is the short one), then
  :func:`verifiers.poseidon.poseidon_hash`.
* ``address_seed = poseidon([H(name,32), H(value,115), H(aud,145), poseidon([salt])])``.
* address = ``blake2b-256(0x05 || len(iss) || iss || seed_bytes)`` with seed
  bytes padded to 32 (``padded=True``; Sui's V2 form and the SDK default) or
  minimal (``padded=False``; the SDK's ``legacyAddress: true``).

Errors: :class:`verifiers.errors.VerificationError` from :class:`ZkLoginVerifier`
(``nonce_mismatch``, ``expired``, ``malformed``, plus the OIDC reasons);
ValueError from the pure helpers on out-of-range input.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.oidc import OidcClaims, OidcVerifier
from popgate.verifiers.poseidon import R, poseidon_hash
from popgate.verifiers.spend import Spend

__all__ = [
    "FLAG_ED25519",
    "FLAG_SECP256K1",
    "FLAG_SECP256R1",
    "EphemeralKey",
    "ZkLoginAttestation",
    "ZkLoginVerifier",
    "address_from_seed",
    "compute_nonce",
    "decode_ext_eph_pk",
    "gen_address_seed",
    "hash_ascii_str_to_field",
    "normalize_issuer",
    "parse_ext_eph_pk",
    "zklogin_address",
]

FLAG_ED25519, FLAG_SECP256K1, FLAG_SECP256R1 = 0x00, 0x01, 0x02
_KEY_LEN = {FLAG_ED25519: 32, FLAG_SECP256K1: 33, FLAG_SECP256R1: 33}
_ZKLOGIN_FLAG = 0x05
MAX_NAME_LEN, MAX_VALUE_LEN, MAX_AUD_LEN = 32, 115, 145
EpochMode = Literal["unix", "sui"]


@dataclass(frozen=True)
class EphemeralKey:
    """A parsed ``flag || public key``; ``scheme`` is ed25519/secp256k1/secp256r1."""

    flag: int
    public_key: bytes

    @property
    def scheme(self) -> str:
        return {0: "ed25519", 1: "secp256k1", 2: "secp256r1"}[self.flag]

    @property
    def extended(self) -> bytes:
        return bytes([self.flag]) + self.public_key


def parse_ext_eph_pk(data: bytes) -> EphemeralKey:
    """Parse ``flag || pk``; raises Malformed for an unknown flag or wrong length."""
    if len(data) < 2 or data[0] not in _KEY_LEN or len(data) != 1 + _KEY_LEN[data[0]]:
        raise Malformed(detail="extended ephemeral public key: bad flag or length")
    if data[0] != FLAG_ED25519 and data[1] not in (2, 3):
        raise Malformed(detail="compressed EC point expected")
    return EphemeralKey(data[0], bytes(data[1:]))


def decode_ext_eph_pk(text: Any) -> bytes:
    """The bytes of ``flag || pk`` sent as base64 (standard or URL alphabet,
    padding optional, at most 128 characters); raises Malformed."""
    if not isinstance(text, str) or len(text) > 128:
        raise Malformed(detail="ext_eph_pk must be base64 of flag || public key")
    try:
        std = text.replace("-", "+").replace("_", "/")
        return base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise Malformed(detail="ext_eph_pk must be base64 of flag || public key") from None


def compute_nonce(ext_eph_pk: bytes, max_epoch: int, randomness: int) -> str:
    """@mysten/sui ``generateNonce`` over the raw extended key bytes.

    Raises ValueError when ``max_epoch`` is not a u64 or ``randomness`` not a
    field element.
    """
    if not 0 <= max_epoch < 2**64:
        raise ValueError("max_epoch must be a u64")
    if not 0 <= randomness < R:
        raise ValueError("randomness must be a field element")
    v = int.from_bytes(ext_eph_pk, "big")
    h = poseidon_hash([v >> 128, v & ((1 << 128) - 1), max_epoch, randomness])
    return base64.urlsafe_b64encode((h % (1 << 160)).to_bytes(20, "big")).rstrip(b"=").decode()


@lru_cache(maxsize=1024)  # claim names, audiences and salts repeat across sessions
def hash_ascii_str_to_field(s: str, max_len: int) -> int:
    """zkLogin ``hashASCIIStrToField``; raises ValueError for non-ASCII or too long."""
    if not s.isascii():
        raise ValueError("string is not ASCII")
    if len(s) > max_len:
        raise ValueError(f"string longer than {max_len} characters")
    raw = s.encode("ascii").ljust(max_len, b"\0")
    first = len(raw) % 31 or 31
    limbs = [int.from_bytes(raw[:first], "big")]
    limbs += [int.from_bytes(raw[i : i + 31], "big") for i in range(first, len(raw), 31)]
    return poseidon_hash(limbs)


def gen_address_seed(salt: int, name: str, value: str, aud: str) -> int:
    """zkLogin ``genAddressSeed`` (default claim-length limits)."""
    if not 0 <= salt < R:
        raise ValueError("salt must be a field element")
    return poseidon_hash(
        [
            hash_ascii_str_to_field(name, MAX_NAME_LEN),
            hash_ascii_str_to_field(value, MAX_VALUE_LEN),
            hash_ascii_str_to_field(aud, MAX_AUD_LEN),
            _salt_hash(salt),
        ]
    )


@lru_cache(maxsize=64)
def _salt_hash(salt: int) -> int:
    return poseidon_hash([salt])


def normalize_issuer(iss: str) -> str:
    """The SDK maps the bare Google issuer to its https form."""
    return "https://accounts.google.com" if iss == "accounts.google.com" else iss


def address_from_seed(seed: int, iss: str, *, padded: bool = True) -> str:
    """Sui address (``0x`` + 64 hex) for ``seed`` under ``iss``; ValueError if out of range."""
    if not 0 <= seed < R:
        raise ValueError("address seed must be a field element")
    iss_b = normalize_issuer(iss).encode()
    if len(iss_b) > 255:
        raise ValueError("issuer too long")
    seed_b = seed.to_bytes(32, "big")
    if not padded:
        seed_b = seed_b.lstrip(b"\0") or b"\0"
    digest = hashlib.blake2b(bytes([_ZKLOGIN_FLAG, len(iss_b)]) + iss_b + seed_b, digest_size=32)
    return "0x" + digest.hexdigest()


def zklogin_address(
    *, salt: int, iss: str, aud: str, sub: str, claim_name: str = "sub", padded: bool = True
) -> str:
    """``jwtToAddress`` / ``computeZkLoginAddress`` from claims; ValueError on bad input."""
    return address_from_seed(gen_address_seed(salt, claim_name, sub, aud), iss, padded=padded)


@dataclass(frozen=True)
class ZkLoginAttestation:
    """A verified session binding: who (subject), which key, until when."""

    subject: str
    address: str | None
    iss: str
    sub: str
    aud: str
    ephemeral_key: EphemeralKey
    max_epoch: int
    expires_at: float | None  # unix seconds in ``unix`` mode, None in ``sui`` mode
    claims: OidcClaims


def token_spend(token: str, exp: float, now: float, detail: str = "id_token already exchanged") -> Spend:
    """An exchanged id_token, spent once until two minutes past its ``exp``
    (the caller claims it; ``replayed`` when already used)."""
    ident = hashlib.sha256(token.encode()).hexdigest()
    return Spend("zklogin-jwt", ident, max(60.0, exp + 120 - now), detail=detail)


class ZkLoginVerifier:
    """OIDC id_token + zkLogin nonce binding.

    ``epoch_mode="unix"``: ``max_epoch`` is a unix expiry (now <= max_epoch <=
    now + ``max_session``). ``"sui"``: a Sui epoch, checked against the
    caller's ``current_epoch`` (current <= max_epoch <= current + ``max_epoch_delta``).
    The subject is ``zklogin:<address>`` when a ``salt`` is configured,
    otherwise ``oidc:<hex HMAC-SHA256(subject_key, iss NUL sub)[:32]>``.
    """

    def __init__(
        self,
        oidc: OidcVerifier,
        *,
        epoch_mode: EpochMode = "unix",
        salt: int | None = None,
        subject_key: bytes | None = None,
        max_session: float = 7 * 86400.0,
        max_epoch_delta: int = 30,
        padded_address: bool = True,
    ) -> None:
        if epoch_mode not in ("unix", "sui"):
            raise ValueError("epoch_mode must be 'unix' or 'sui'")
        if salt is None and not subject_key:
            raise ValueError("configure a salt or a subject_key")
        if salt is not None and not 0 <= salt < R:
            raise ValueError("salt must be a field element")
        self._oidc, self._mode, self._salt, self._key = oidc, epoch_mode, salt, subject_key
        self._max_session, self._max_delta, self._padded = max_session, max_epoch_delta, padded_address

    async def verify(
        self,
        id_token: str,
        ext_eph_pk: bytes,
        max_epoch: int,
        randomness: int,
        *,
        now: float,
        current_epoch: int | None = None,
    ) -> ZkLoginAttestation:
        """Verify the token and that its nonce commits to the presented key.

        Raises VerificationError: the OIDC reasons, ``malformed`` (bad key or
        numbers), ``expired`` (max_epoch passed), ``nonce_mismatch``.
        """
        key = parse_ext_eph_pk(ext_eph_pk)
        if not 0 <= randomness < R or not 0 <= max_epoch < 2**64:
            raise Malformed(detail="randomness or max_epoch out of range")
        expires_at = self.check_epoch(max_epoch, now, current_epoch)
        claims = await self._oidc.verify(id_token, now=now, require_nonce=True)
        expected = compute_nonce(key.extended, max_epoch, randomness)
        if not hmac.compare_digest(expected.encode(), (claims.nonce or "").encode()):
            raise VerificationError("nonce_mismatch", "JWT nonce does not commit to this key")
        address = None
        if self._salt is not None:
            try:
                address = zklogin_address(
                    salt=self._salt, iss=claims.iss, aud=claims.aud, sub=claims.sub, padded=self._padded
                )
            except ValueError as exc:  # claim too long / non-ASCII for the circuit
                raise Malformed(detail=str(exc)) from exc
            subject = "zklogin:" + address
        else:
            if self._key is None:
                raise RuntimeError("zkLogin verifier has neither a salt nor a subject key")
            mac = hmac.new(self._key, claims.iss.encode() + b"\0" + claims.sub.encode(), "sha256")
            subject = "oidc:" + mac.hexdigest()[:32]
        return ZkLoginAttestation(
            subject=subject,
            address=address,
            iss=claims.iss,
            sub=claims.sub,
            aud=claims.aud,
            ephemeral_key=key,
            max_epoch=max_epoch,
            expires_at=expires_at,
            claims=claims,
        )

    def check_epoch(self, max_epoch: int, now: float, current_epoch: int | None) -> float | None:
        """The session expiry ``max_epoch`` allows (unix mode; None in sui mode).

        Raises VerificationError ``expired`` (passed) or ``max_epoch_too_far`` (beyond
        ``max_session`` / ``max_epoch_delta``), Malformed (sui mode without a current epoch)."""
        if self._mode == "unix":
            if max_epoch < now:
                raise VerificationError("expired", "max_epoch passed")
            if max_epoch > now + self._max_session:
                raise VerificationError("max_epoch_too_far", "max_epoch beyond max_session")
            return float(max_epoch)
        if current_epoch is None:
            raise Malformed(detail="current epoch unknown")
        if max_epoch < current_epoch:
            raise VerificationError("expired", "max_epoch passed")
        if max_epoch > current_epoch + self._max_delta:
            raise VerificationError("max_epoch_too_far", "max_epoch beyond max_epoch_delta")
        return None
