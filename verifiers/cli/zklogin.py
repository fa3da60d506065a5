"""``popgate verify zklogin``: an id_token bound to an ephemeral key by its nonce.

Case: ``{"jwt", "jwks", "issuer", "audience", "ext_eph_pk" (base64 flag||pk),
"max_epoch", "randomness", "now", "epoch_mode": "unix"|"sui", "current_epoch"
(sui mode), "salt" (optional decimal)}``. Output: ``subject``, ``address``
(the padded zkLogin address when a salt is given, else null), ``iss``,
``expires``. Without a salt the subject is a keyed hash of iss+sub under a
per-run random key (pseudonymous, not stable across runs). An id_token already
accepted earlier in the same run gives ``replayed`` (the gateway spends each once).
"""

from __future__ import annotations

import os
from typing import Any

from popgate.verifiers.cli.zklogin_nonce import decimal, ext_key
from popgate.verifiers.errors import Malformed
from popgate.verifiers.jwks import JwksCache, ProviderConfig
from popgate.verifiers.oidc import OidcVerifier
from popgate.verifiers.zklogin import ZkLoginVerifier, token_spend

_RUN_KEY = os.urandom(32)


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    issuer, audience, jwks = case["issuer"], case["audience"], case["jwks"]
    if not isinstance(issuer, str) or not isinstance(audience, str) or not isinstance(jwks, dict):
        raise Malformed(detail="issuer/audience must be strings, jwks an object")
    mode = case.get("epoch_mode", "unix")
    if mode not in ("unix", "sui"):
        raise Malformed(detail="epoch_mode must be unix or sui")
    provider = ProviderConfig(issuer=issuer, audiences=frozenset([audience]), jwks=jwks)
    salt = decimal(case["salt"]) if case.get("salt") is not None else None
    verifier = ZkLoginVerifier(
        OidcVerifier([provider], JwksCache()), epoch_mode=mode, salt=salt, subject_key=_RUN_KEY
    )
    current = decimal(case["current_epoch"]) if mode == "sui" and "current_epoch" in case else None
    att = await verifier.verify(
        case["jwt"],
        ext_key(case["ext_eph_pk"]),
        decimal(case["max_epoch"]),
        decimal(case["randomness"]),
        now=env.now,
        current_epoch=current,
    )
    # Each id_token is exchanged once, as at POST /.well-known/popgate/zklogin.
    await env.spend(token_spend(case["jwt"], att.claims.exp, env.now, "id_token already used in this run"))
    return {"subject": att.subject, "address": att.address, "iss": att.iss, "expires": att.expires_at}
