"""``popgate verify privatepass``: ``{"token", "challenge", "issuer_keys": [...] | "token_key",
"issuer"?, "origin_info"?, "now"?}`` -> ``nonce``, ``token_key_id``, ``issuer``, ``origin_info``.

``token`` is base64url of the Token (or a whole ``PrivateToken token=…`` header),
``challenge`` base64url of the TokenChallenge the token answers, keys base64url
SubjectPublicKeyInfo (RSASSA-PSS, RSA-2048). ``issuer`` / ``origin_info``, when
given, must be what the challenge names (``wrong_challenge``). Nonces are spent
in the run's shared store: the same token twice in one run gives ``replayed``.
"""

from __future__ import annotations

from typing import Any

from popgate.verifiers.errors import Malformed, VerificationError
from popgate.verifiers.privatepass import (
    b64u_decode,
    load_token_key,
    parse_challenge,
    parse_token,
    token_from_authorization,
    verify_token,
)


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    raw_token = case["token"]
    if not isinstance(raw_token, str):
        raise Malformed(detail="token must be a string")
    if raw_token[:13].lower() == "privatetoken ":
        token = token_from_authorization(raw_token)
    else:
        token = parse_token(b64u_decode(raw_token))
    challenge = parse_challenge(b64u_decode(case["challenge"]))
    for name, have in (("issuer", challenge.issuer_name), ("origin_info", challenge.origin_info)):
        if name in case and case[name] != have:
            raise VerificationError("wrong_challenge", f"challenge {name} is {have!r}")
    encoded = case.get("issuer_keys", [case["token_key"]] if "token_key" in case else None)
    if not isinstance(encoded, list) or not encoded:
        raise Malformed(detail="issuer_keys must be a non-empty list (or give token_key)")
    keys = {k.key_id: k for k in (load_token_key(b64u_decode(e)) for e in encoded)}
    await env.spend(verify_token(token, keys, {challenge.digest()}, spend_ttl=86400))
    return {
        "nonce": token.nonce.hex(),
        "token_key_id": token.token_key_id.hex(),
        "issuer": challenge.issuer_name,
        "origin_info": challenge.origin_info,
    }
