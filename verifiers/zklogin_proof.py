"""Full zkLogin proofs (Sui zkLogin, circuit V1): the gateway never sees the JWT.

A zkLogin prover turns (JWT, ephemeral key, max_epoch, randomness, salt)
into a Groth16 proof with **one public input**, the all-inputs hash::

    Poseidon([eph_hi, eph_lo, address_seed, max_epoch,
              H(issBase64Details.value, 224), indexMod4,
              H(headerBase64, 248), modulus_F])

where ``eph_hi``/``eph_lo`` split ``flag || public key`` as the nonce does,
``H`` is ``hashASCIIStrToField`` and ``modulus_F`` is Poseidon over the
provider's 2048-bit RSA modulus in 248-bit limbs (the top limb 64 bits),
most significant first. The proof says: a JWT signed by that key, whose
``iss`` and header are these, has a nonce committing to this ephemeral key
and ``max_epoch``, and its ``sub``/``aud`` with the user's salt give this
address seed. popgate recomputes the hash from what it trusts (the key from
the provider's JWKS, the iss and kid it decodes itself) and checks the proof
against the production key (``verifiers/data/zklogin_prod_v1.vk.json``).

Inputs come as the prover's JSON (``proofPoints``, ``issBase64Details``,
``headerBase64``, ``addressSeed``) or inside a serialized zkLogin signature
(``base64(0x05 || BCS(ZkLoginSignature))``, from which the ephemeral key and
``max_epoch`` are taken too).

Errors: :class:`~verifiers.errors.Malformed` for anything that does not
parse; ``VerificationError("wrong_alg")`` for a header that is not RS256;
:class:`~verifiers.groth16.InvalidProof` from the Groth16 check.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.groth16 import PreparedKey, Proof, parse_proof, prepared_key, verify
from popgate.verifiers.poseidon import R, poseidon_hash
from popgate.verifiers.zklogin import (
    EphemeralKey,
    decode_ext_eph_pk,
    hash_ascii_str_to_field,
    parse_ext_eph_pk,
)

__all__ = [
    "SignatureParts",
    "ZkLoginInputs",
    "all_inputs_hash",
    "decode_iss",
    "header_kid",
    "modulus_field",
    "parse_inputs",
    "parse_signature",
    "parse_submission",
    "prod_key_json",
    "verify_inputs",
]

MAX_ISS_B64, MAX_HEADER_B64 = 224, 248
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_ALPHABET = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")}
_SIGNATURE_FLAG = 0x05
_USER_SIG_LEN = {0x00: (64, 32), 0x01: (64, 33), 0x02: (64, 33)}  # flag -> (sig, pk) bytes


@dataclass(frozen=True)
class ZkLoginInputs:
    """The prover's output plus the address seed; ``proof_json`` is snarkjs-shaped."""

    proof: Proof
    proof_json: dict[str, Any]
    iss_b64: str
    index_mod_4: int
    header_b64: str
    address_seed: int
    iss: str
    kid: str


@dataclass(frozen=True)
class SignatureParts:
    """A parsed zkLogin submission (``user_signature`` empty when sent without one)."""

    inputs: ZkLoginInputs
    max_epoch: int
    ephemeral_key: EphemeralKey
    user_signature: bytes


def _string(x: Any, what: str, limit: int) -> str:
    if not isinstance(x, str) or not x or len(x) > limit:
        raise Malformed(detail=f"{what} must be a non-empty string of at most {limit} characters")
    return x


def _decimal(x: Any, what: str) -> int:
    if isinstance(x, int) and not isinstance(x, bool):
        v = x
    elif isinstance(x, str) and x.isdigit() and len(x) <= 78:
        v = int(x)
    else:
        raise Malformed(detail=f"{what} must be a decimal integer")
    if not 0 <= v < R:
        raise Malformed(detail=f"{what} is not a field element")
    return v


def decode_iss(value: str, index_mod_4: int) -> str:
    """The ``iss`` from ``issBase64Details``: a base64url slice of the JWT
    payload that starts ``index_mod_4`` characters into a 4-character group and
    covers ``"iss":"...",`` (or ``...}``). Raises Malformed."""
    if not isinstance(index_mod_4, int) or isinstance(index_mod_4, bool) or index_mod_4 not in (0, 1, 2):
        raise Malformed(detail="indexMod4 must be 0, 1 or 2")
    if len(value) < 2 or not _B64URL.fullmatch(value):
        raise Malformed(detail="issBase64Details.value is not base64url")
    bits = "".join(format(_ALPHABET[c], "06b") for c in value)
    bits = bits[2 * index_mod_4 :]
    tail = (index_mod_4 + len(value) - 1) % 4  # position of the last character in its group
    if tail == 0:
        raise Malformed(detail="issBase64Details.value ends inside a byte")
    bits = bits[: len(bits) - {3: 0, 2: 2, 1: 4}[tail]]
    if len(bits) % 8:
        raise Malformed(detail="issBase64Details.value does not cover whole bytes")
    try:
        claim = int(bits, 2).to_bytes(len(bits) // 8, "big").decode("utf-8")
    except (UnicodeDecodeError, ValueError):
        raise Malformed(detail="issBase64Details.value is not UTF-8") from None
    if not claim or claim[-1] not in ",}":
        raise Malformed(detail="iss claim must end with ',' or '}'")
    try:
        parsed = json.loads("{" + claim[:-1] + "}")
    except ValueError:
        raise Malformed(detail="iss claim is not JSON") from None
    if not isinstance(parsed, dict) or list(parsed) != ["iss"] or not isinstance(parsed["iss"], str):
        raise Malformed(detail='the claim must be "iss" with a string value')
    return parsed["iss"]


def header_kid(header_b64: str) -> str:
    """The ``kid`` of a base64url JWT header; RS256 only. Raises Malformed / VerificationError."""
    if not _B64URL.fullmatch(header_b64):
        raise Malformed(detail="headerBase64 is not base64url")
    try:
        header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    except (binascii.Error, ValueError):
        raise Malformed(detail="headerBase64 is not a JSON object") from None
    if not isinstance(header, dict):
        raise Malformed(detail="headerBase64 is not a JSON object")
    if header.get("alg") != "RS256":
        raise VerificationError("wrong_alg", "zkLogin proofs cover RS256 JWTs only")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > 256:
        raise Malformed(detail="JWT header without a kid")
    return kid


def parse_inputs(obj: Any, address_seed: Any = None) -> ZkLoginInputs:
    """Parse the prover's JSON (``addressSeed`` inside or given). Raises Malformed."""
    if not isinstance(obj, dict):
        raise Malformed(detail="zkLogin inputs must be an object")
    points = obj.get("proofPoints")
    details = obj.get("issBase64Details")
    if not isinstance(points, dict) or not isinstance(details, dict):
        raise Malformed(detail="zkLogin inputs need proofPoints and issBase64Details")
    proof_json = {"pi_a": points.get("a"), "pi_b": points.get("b"), "pi_c": points.get("c")}
    proof = parse_proof(proof_json)
    iss_b64 = _string(details.get("value"), "issBase64Details.value", MAX_ISS_B64)
    index = details.get("indexMod4")
    if not isinstance(index, int):  # decode_iss checks the value
        raise Malformed(detail="indexMod4 must be 0, 1 or 2")
    iss = decode_iss(iss_b64, index)
    header_b64 = _string(obj.get("headerBase64"), "headerBase64", MAX_HEADER_B64)
    kid = header_kid(header_b64)
    seed = _decimal(obj.get("addressSeed", address_seed), "addressSeed")
    return ZkLoginInputs(proof, proof_json, iss_b64, index, header_b64, seed, iss, kid)


class _Bcs:
    """Just enough BCS to read a ZkLoginSignature."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.at + n > len(self.data):
            raise Malformed(detail="zkLogin signature truncated")
        out = self.data[self.at : self.at + n]
        self.at += n
        return out

    def uleb(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise Malformed(detail="bad ULEB128 length")

    def string(self, limit: int = 1024) -> str:
        n = self.uleb()
        if n > limit:
            raise Malformed(detail="string too long in zkLogin signature")
        try:
            return self.take(n).decode("utf-8")
        except UnicodeDecodeError:
            raise Malformed(detail="zkLogin signature string is not UTF-8") from None

    def strings(self, limit: int = 4) -> list[str]:
        n = self.uleb()
        if n > limit:
            raise Malformed(detail="too many strings in zkLogin signature")
        return [self.string(80) for _ in range(n)]


def parse_signature(text: Any) -> SignatureParts:
    """Parse ``base64(0x05 || BCS(ZkLoginSignature))``. Raises Malformed."""
    if not isinstance(text, str) or len(text) > 8192:
        raise Malformed(detail="zklogin_signature must be a base64 string")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise Malformed(detail="zklogin_signature is not base64") from None
    if not raw or raw[0] != _SIGNATURE_FLAG:
        raise Malformed(detail="not a zkLogin signature (flag 0x05)")
    r = _Bcs(raw[1:])
    a = r.strings()
    rows = r.uleb()
    if rows > 4:
        raise Malformed(detail="bad proof point b")
    b = [r.strings() for _ in range(rows)]
    c = r.strings()
    value, index = r.string(MAX_ISS_B64), r.take(1)[0]
    header, seed = r.string(MAX_HEADER_B64), r.string(80)
    max_epoch = int.from_bytes(r.take(8), "little")
    user_sig = r.take(r.uleb())
    if r.at != len(r.data):
        raise Malformed(detail="trailing bytes after the zkLogin signature")
    inputs = parse_inputs(
        {
            "proofPoints": {"a": a, "b": b, "c": c},
            "issBase64Details": {"value": value, "indexMod4": index},
            "headerBase64": header,
            "addressSeed": seed,
        }
    )
    if not user_sig or user_sig[0] not in _USER_SIG_LEN:
        raise Malformed(detail="unknown ephemeral signature scheme")
    sig_len, pk_len = _USER_SIG_LEN[user_sig[0]]
    if len(user_sig) != 1 + sig_len + pk_len:
        raise Malformed(detail="ephemeral signature has the wrong length")
    key = parse_ext_eph_pk(bytes([user_sig[0]]) + user_sig[1 + sig_len :])
    return SignatureParts(inputs, max_epoch, key, user_sig)


def parse_submission(obj: Any) -> SignatureParts:
    """What a client submits: ``{"zklogin_signature"}`` or ``{"inputs", "ext_eph_pk"
    (base64 of flag || pk), "max_epoch"}`` (``user_signature`` is empty then). Raises Malformed."""
    if not isinstance(obj, dict):
        raise Malformed(detail="expected an object")
    if "zklogin_signature" in obj:
        return parse_signature(obj["zklogin_signature"])
    inputs = parse_inputs(obj.get("inputs"), obj.get("address_seed"))
    epoch = obj.get("max_epoch")
    if isinstance(epoch, str) and epoch.isdigit() and len(epoch) <= 20:
        epoch = int(epoch)
    if not isinstance(epoch, int) or isinstance(epoch, bool) or not 0 <= epoch < 2**64:
        raise Malformed(detail="max_epoch must be a u64 (a decimal string or integer)")
    key = parse_ext_eph_pk(decode_ext_eph_pk(obj.get("ext_eph_pk")))
    return SignatureParts(inputs, epoch, key, b"")


def modulus_field(modulus: int) -> int:
    """Poseidon over a 2048-bit RSA modulus in 248-bit limbs (top limb first)."""
    if not 0 < modulus < 1 << 2048:
        raise Malformed(detail="RSA modulus must be at most 2048 bits")
    limbs = [(modulus >> (248 * i)) & ((1 << 248) - 1) for i in range(8, -1, -1)]
    return poseidon_hash(limbs)


def all_inputs_hash(inputs: ZkLoginInputs, ext_eph_pk: bytes, max_epoch: int, modulus: int) -> int:
    """The proof's one public input, from what the verifier trusts."""
    if not 0 <= max_epoch < 2**64:
        raise Malformed(detail="max_epoch must be a u64")
    v = int.from_bytes(ext_eph_pk, "big")
    return poseidon_hash(
        [
            v >> 128,
            v & ((1 << 128) - 1),
            inputs.address_seed,
            max_epoch,
            hash_ascii_str_to_field(inputs.iss_b64, MAX_ISS_B64),
            inputs.index_mod_4,
            hash_ascii_str_to_field(inputs.header_b64, MAX_HEADER_B64),
            modulus_field(modulus),
        ]
    )


@lru_cache(maxsize=1)
def prod_key_json() -> dict[str, Any]:
    """The zkLogin production verifying key (snarkjs JSON, one public input)."""
    text = (Path(__file__).parent / "data" / "zklogin_prod_v1.vk.json").read_text()
    vk: dict[str, Any] = json.loads(text)["prod_v1"]
    return vk


def verify_inputs(
    inputs: ZkLoginInputs, ext_eph_pk: bytes, max_epoch: int, modulus: int, key: PreparedKey | None = None
) -> None:
    """Check the proof in-process (the gateway uses its process pool instead).

    Raises Malformed, or InvalidProof when the proof does not verify."""
    verify(
        key or prepared_key(prod_key_json()),
        inputs.proof,
        [all_inputs_hash(inputs, ext_eph_pk, max_epoch, modulus)],
    )
