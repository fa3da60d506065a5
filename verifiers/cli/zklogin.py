"""``popgate verify zklogin``: an id_token bound to an ephemeral key by its nonce.

Case: ``{"jwt", "jwks", "issuer", "audience", "ext_eph_pk" (base64 flag||pk),
"max_epoch", "randomness", "now", "epoch_mode": "unix"|"sui", "current_epoch"
(sui mode), "salt" (optional decimal)}``. Output: ``subject``, ``address``
(the padded zkLogin address when a salt is given, else null), ``iss``,
``expires``. Without a salt the subject is a keyed hash of iss+sub under a
per-run random key (pseudonymous, not stable across runs). An id_token already
accepted earlier in the same run gives ``replayed`` (the gateway spends each once).

With ``--config FILE`` the ``[zklogin]`` table decides as it does in the gateway: its providers
(the case's ``issuer``/``audience`` may then be left out; the case's ``jwks`` replaces the
provider's key source, else its ``jwks_file`` is read), ``epoch_mode``, ``current_epoch``,
``max_session``, ``max_epoch_delta``, ``salt`` and ``padded_address``, and the subject is keyed
with ``[sessions] subject_key``: the same subject the gateway would give.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal

from popgate.verifiers.cli.zklogin_nonce import decimal, ext_key
from popgate.verifiers.errors import Malformed
from popgate.verifiers.jwks import JwksCache, ProviderConfig
from popgate.verifiers.oidc import OidcVerifier
from popgate.verifiers.zklogin import ZkLoginVerifier, token_spend

_RUN_KEY = os.urandom(32)


async def check(case: dict[str, Any], env: Any) -> dict[str, Any]:
    table = _zklogin_table(env.config)
    verifier = _from_table(case, table, env.config) if table is not None else _from_case(case)
    mode = case.get("epoch_mode", table.epoch_mode if table is not None else "unix")
    current = None
    if mode == "sui":
        given = case.get("current_epoch")
        current = decimal(given) if given is not None else getattr(table, "current_epoch", None)
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


def _zklogin_table(config: Any) -> Any:
    """The validated ``[zklogin]`` settings of ``--config`` (None without one)."""
    features = getattr(config, "features", None)
    return getattr(features, "zklogin", None)


def _from_case(case: dict[str, Any]) -> ZkLoginVerifier:
    issuer, audience, jwks = case["issuer"], case["audience"], case["jwks"]
    if not isinstance(issuer, str) or not isinstance(audience, str) or not isinstance(jwks, dict):
        raise Malformed(detail="issuer/audience must be strings, jwks an object")
    provider = ProviderConfig(issuer=issuer, audiences=frozenset([audience]), jwks=jwks)
    salt = decimal(case["salt"]) if case.get("salt") is not None else None
    return ZkLoginVerifier(
        OidcVerifier([provider], JwksCache()),
        epoch_mode=_mode(case.get("epoch_mode", "unix")),
        salt=salt,
        subject_key=_RUN_KEY,
    )


def _from_table(case: dict[str, Any], table: Any, config: Any) -> ZkLoginVerifier:
    providers = list(table.providers)
    if isinstance(case.get("issuer"), str):
        providers = [p for p in providers if p.issuer == case["issuer"]]
    jwks = case.get("jwks")
    if jwks is not None:
        if not isinstance(jwks, dict):
            raise Malformed(detail="jwks must be an object")
        providers = [dataclasses.replace(p, jwks=jwks, jwks_url=None, jwks_file=None) for p in providers]
    salt = decimal(case["salt"]) if case.get("salt") is not None else table.salt
    return ZkLoginVerifier(
        OidcVerifier(providers, JwksCache()),
        epoch_mode=_mode(case.get("epoch_mode", table.epoch_mode)),
        salt=salt,
        subject_key=config.sessions.subject_key,
        max_session=table.max_session,
        max_epoch_delta=table.max_epoch_delta,
        padded_address=table.padded_address,
    )


def _mode(mode: Any) -> Literal["unix", "sui"]:
    if mode == "unix":
        return "unix"
    if mode == "sui":
        return "sui"
    raise Malformed(detail="epoch_mode must be unix or sui")
