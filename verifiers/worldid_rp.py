"""The relying-party side of IDKit 4: signed ``rp_context`` and stateless nonces.

IDKit 4.x (``@worldcoin/idkit-core`` 4.3.0, signing in ``@worldcoin/idkit-server``
1.1.1 ``computeRpSignatureMessage``/``signRequest``; Rust
``compute_rp_signature_msg`` in world-id-primitives) needs, for every request,
``rp_context = {rp_id, nonce, created_at, expires_at, signature}``. The
signature is EIP-191 ``personal_sign`` by the RP's secp256k1 key over::

    0x01 || nonce (32 bytes) || created_at (u64 BE) || expires_at (u64 BE) || hashSignal(action) (32 bytes)

(81 bytes; session requests omit the action: 49 bytes), as 65 bytes
``r || s || v`` with ``v`` = 27/28, hex with ``0x``.

popgate's nonces are stateless and self-authenticating, and a field element
(top byte zero, as the SDK's ``hashToField`` nonces): ``0x00 || created_at
(8) || random (8) || HMAC-SHA256(nonce key, created_at || random || rp_id ||
action)[:15]``. :func:`check_nonce` accepts a nonce made under any configured
key (rotation) while ``created_at + ttl`` has not passed; the caller spends
it once. In a 4.0 proof the nonce is a public input, so a proof made for one
request cannot be replayed against another.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from coincurve import PrivateKey

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.evm import keccak256, to_checksum_address
from popgate.verifiers.worldid import hash_to_field

VERSION = 1
MAC_BYTES = 15


class BadNonce(VerificationError):
    """The result's nonce is not one this gateway issued (or it expired)."""

    reason = "invalid_nonce"


def rp_message(nonce: int, created_at: int, expires_at: int, action: str | None) -> bytes:
    """The signed payload (``computeRpSignatureMessage``)."""
    out = bytes([VERSION]) + nonce.to_bytes(32, "big")
    out += created_at.to_bytes(8, "big") + expires_at.to_bytes(8, "big")
    if action is not None:
        out += hash_to_field(action.encode()).to_bytes(32, "big")
    return out


def eip191_digest(message: bytes) -> bytes:
    return keccak256(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


def parse_signing_key(secret: bytes) -> bytes:
    """A secret file's bytes (64 hex digits, optional ``0x``) → the 32-byte key; raise ValueError."""
    text = secret.decode("ascii", "replace").strip()
    text = text[2:] if text.startswith(("0x", "0X")) else text
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise ValueError("expected 64 hex digits (a secp256k1 private key)") from None
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes (64 hex digits), got {len(raw)}")
    PrivateKey(raw)  # raises ValueError for 0 or >= n
    return raw


def signer_address(key: bytes) -> str:
    """The EIP-55 address of ``key`` (what the RP registry holds as the RP's signer)."""
    pub = PrivateKey(key).public_key.format(compressed=False)[1:]
    return to_checksum_address(keccak256(pub)[-20:])


def sign(key: bytes, message: bytes) -> str:
    """EIP-191 signature ``0x`` + r || s || v (v = 27/28), low-s."""
    sig = PrivateKey(key).sign_recoverable(eip191_digest(message), hasher=None)
    return "0x" + (sig[:64] + bytes([sig[64] + 27])).hex()


def _mac(nonce_key: bytes, body: bytes, rp_id: int, action: str) -> bytes:
    data = body + rp_id.to_bytes(8, "big") + action.encode()
    return hmac.new(nonce_key, data, hashlib.sha256).digest()[:MAC_BYTES]


def nonce_key(signing_key: bytes) -> bytes:
    """The nonce MAC key derived from an RP signing key."""
    return hmac.new(signing_key, b"popgate-worldid-nonce", hashlib.sha256).digest()


def make_nonce(nonce_key: bytes, created_at: int, rp_id: int, action: str) -> int:
    body = created_at.to_bytes(8, "big") + os.urandom(8)
    return int.from_bytes(b"\x00" + body + _mac(nonce_key, body, rp_id, action), "big")


def check_nonce(keys: Mapping[str, bytes], nonce: int, rp_id: int, action: str, now: float, ttl: int) -> int:
    """The nonce's ``created_at`` if one of ``keys`` (nonce keys) made it for
    (rp_id, action) and ``now <= created_at + ttl``; raise BadNonce."""
    if not 0 <= nonce < 2**248:
        raise BadNonce(detail="not a popgate nonce")
    raw = nonce.to_bytes(32, "big")
    body, mac = raw[1:17], raw[17:]
    if not any(hmac.compare_digest(_mac(k, body, rp_id, action), mac) for k in keys.values()):
        raise BadNonce(detail="not issued here")
    created = int.from_bytes(body[:8], "big")
    if not created - 60 <= now <= created + ttl:
        raise BadNonce(detail="expired")
    return created


def parse_nonce(value: object) -> int:
    if not isinstance(value, str) or not value.startswith("0x") or not 3 <= len(value) <= 66:
        raise Malformed(detail="nonce: expected 0x + hex")
    try:
        return int(value[2:], 16)
    except ValueError:
        raise Malformed(detail="nonce: expected 0x + hex") from None


@dataclass(frozen=True, slots=True)
class RpContext:
    rp_id: str
    nonce: str
    created_at: int
    expires_at: int
    signature: str

    def as_json(self) -> dict[str, object]:
        return {
            "rp_id": self.rp_id,
            "nonce": self.nonce,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "signature": self.signature,
        }


def rp_context(key: bytes, rp_id: int, action: str | None, now: float, ttl: int) -> RpContext:
    """A fresh signed ``rp_context`` for a uniqueness request for ``action``."""
    created = int(now)
    nonce = make_nonce(nonce_key(key), created, rp_id, action or "")
    sig = sign(key, rp_message(nonce, created, created + ttl, action))
    return RpContext(f"rp_{rp_id:016x}", f"0x{nonce:064x}", created, created + ttl, sig)
