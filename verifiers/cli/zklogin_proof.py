"""``popgate verify zklogin-proof``: a full zkLogin proof (Sui, circuit V1), no JWT.

Case: ``{"zklogin_signature": base64(0x05 || BCS(ZkLoginSignature))}`` or
``{"inputs": <the prover's JSON with addressSeed>, "ext_eph_pk": base64(flag||pk),
"max_epoch"}``; plus ``"jwks"`` (the provider's key set, the proof's ``kid``
is looked up in it) or ``"modulus"`` (base64url RSA modulus), optionally
``"issuer"`` (the ``iss`` the proof must carry) and ``"vk"`` (a snarkjs key;
default: the zkLogin production key). Output: ``iss``, ``kid``,
``max_epoch``, ``address`` (Sui's unpadded form) and ``address_padded``.
Reasons: ``invalid_proof``, ``unknown_kid``, ``wrong_issuer``, ``wrong_alg``,
``malformed``.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.groth16 import prepared_key
from popgate.verifiers.jwks import parse_jwks
from popgate.verifiers.zklogin import address_from_seed
from popgate.verifiers.zklogin_proof import parse_submission, prod_key_json, verify_inputs


def _modulus(case: dict[str, Any], kid: str) -> int:
    if "modulus" in case:
        text = case["modulus"]
        if not isinstance(text, str):
            raise Malformed(detail="modulus must be base64url")
        try:
            return int.from_bytes(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)), "big")
        except (binascii.Error, ValueError):
            raise Malformed(detail="modulus must be base64url") from None
    keys = parse_jwks(case.get("jwks"))
    jwk = keys.get(kid)
    if jwk is None:
        raise VerificationError("unknown_kid", f"kid {kid!r} not in the JWKS")
    if jwk.kty != "RSA":
        raise VerificationError("wrong_alg", "the proof's key is not an RSA key")
    return int(jwk.key.public_numbers().n)


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    sub = parse_submission(case)
    inputs, max_epoch, eph = sub.inputs, sub.max_epoch, sub.ephemeral_key.extended
    want = case.get("issuer")
    if want is not None and want != inputs.iss:
        raise VerificationError("wrong_issuer", f"the proof is for {inputs.iss!r}")
    key = prepared_key(case["vk"] if "vk" in case else prod_key_json())
    if key.n_public != 1:
        raise Malformed(detail="a zkLogin key has one public input")
    verify_inputs(inputs, eph, max_epoch, _modulus(case, inputs.kid), key)
    return {
        "iss": inputs.iss,
        "kid": inputs.kid,
        "max_epoch": max_epoch,
        "address": address_from_seed(inputs.address_seed, inputs.iss, padded=False),
        "address_padded": address_from_seed(inputs.address_seed, inputs.iss, padded=True),
    }
