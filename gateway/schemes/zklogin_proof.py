"""Full zkLogin proofs at ``POST /.well-known/popgate/zklogin`` (``[zklogin] proofs = true``).

Instead of the id_token, the client sends what a Sui wallet already holds:

    {"zklogin_signature": "<base64 0x05 || BCS(ZkLoginSignature)>"}
    {"inputs": {"proofPoints", "issBase64Details", "headerBase64", "addressSeed"},
     "ext_eph_pk": "<base64 flag || pk>", "max_epoch": "..."}

popgate decodes ``iss`` and ``kid`` itself, requires a configured provider,
takes the RSA key from that provider's JWKS (cached, as for id_tokens),
checks ``max_epoch`` as for id_tokens, recomputes the proof's public input
(:mod:`verifiers.zklogin_proof`) and checks the Groth16 proof in a bounded
process pool (:class:`gateway.schemes.proofpool.ProofPool`: off the event loop,
verdicts cached, identical proofs coalesced, 503 beyond the queue limit). The
session is the same as for an id_token: class ``account``, bound to the
ephemeral key (every later request signed with it), its subject the Sui
address of the proof (``zklogin:0x…``: the address seed already holds the
user's salt).

A proof is not spent once: it only ever buys a session bound to its own
ephemeral key, worthless without that key, and zkLogin signatures are public
on chain (spending them would let anyone who saw one lock its owner out).
Repeats cost a cache lookup, and every exchange passes the per-network rate
limit first. The audience is inside the address seed, hidden by the proof:
with proofs on, any client id of a configured issuer gets in (as on Sui).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from popgate.gateway.errors import BadRequest
from popgate.gateway.registry import Services
from popgate.gateway.schemes.proofpool import ProofPool, service_pool
from popgate.gateway.schemes.zklogin_config import ZkLoginSettings
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.jwks import JwksCache
from popgate.verifiers.oidc import OidcVerifier
from popgate.verifiers.zklogin import EphemeralKey, ZkLoginVerifier, address_from_seed
from popgate.verifiers.zklogin_proof import all_inputs_hash, parse_submission, prod_key_json


@dataclass(frozen=True)
class ProvedAccount:
    subject: str
    address: str
    ephemeral_key: EphemeralKey
    expires_at: float | None


def wants_proof(data: dict[str, Any]) -> bool:
    return "zklogin_signature" in data or "inputs" in data


class ProofExchange:
    """Check a zkLogin proof; the endpoint turns the result into a session."""

    def __init__(
        self,
        settings: ZkLoginSettings,
        oidc: OidcVerifier,
        jwks: JwksCache,
        verifier: ZkLoginVerifier,
        pool: ProofPool,
    ) -> None:
        self.s, self.oidc, self.jwks, self.verifier, self.pool = settings, oidc, jwks, verifier, pool

    async def verify(self, data: dict[str, Any], *, now: float, current_epoch: int | None) -> ProvedAccount:
        """Raise VerificationError (``malformed``, ``wrong_issuer``, ``unknown_kid``,
        ``jwks_unavailable``, ``expired``, ``wrong_alg``, ``invalid_proof``) or Overloaded."""
        sub = parse_submission(data)
        inputs, max_epoch, key = sub.inputs, sub.max_epoch, sub.ephemeral_key
        expires_at = self.verifier.check_epoch(max_epoch, now, current_epoch)
        provider = self.oidc.provider(inputs.iss)
        jwk = await self.jwks.get_key(provider, inputs.kid, now)
        if jwk.kty != "RSA":
            raise VerificationError("wrong_alg", "the proof's provider key is not RSA")
        public = all_inputs_hash(inputs, key.extended, max_epoch, jwk.key.public_numbers().n)
        await self.pool.verify(inputs.proof_json, [public])
        address = address_from_seed(inputs.address_seed, inputs.iss, padded=self.s.padded_address)
        return ProvedAccount("zklogin:" + address, address, key, expires_at)


def proof_exchange(
    settings: ZkLoginSettings,
    services: Services,
    oidc: OidcVerifier,
    jwks: JwksCache,
    verifier: ZkLoginVerifier,
) -> ProofExchange | None:
    """The proof path when ``proofs = true``, with a pool of its own (:func:`service_pool`)."""
    if not settings.proofs:
        return None
    pool = service_pool(
        services,
        settings.proof_vk or prod_key_json(),
        workers=settings.proof_workers,
        queue_limit=settings.proof_queue_limit,
        scheme="zklogin_proof",
    )
    return ProofExchange(settings, oidc, jwks, verifier, pool)


def proofs_disabled() -> BadRequest:
    return BadRequest(
        "zklogin proofs off",
        reason="proofs_disabled",
        public="This gateway takes id_tokens, not zkLogin proofs.",
    )
