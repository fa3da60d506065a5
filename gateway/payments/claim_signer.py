"""The receiver authorizer's key: signs claim batches for ``claimWithSignature``.

The batch-settlement contract moves a batch of vouchers to the receiver only
with a signature of the channels' ``receiverAuthorizer`` over
``ClaimBatch(ClaimEntry[] claims)`` (:func:`verifiers.x402_channel.claim_batch_digest`).
The key comes from ``[x402.batch] receiver_authorizer_key`` (``secret_file``
or ``secret_env``: 32 bytes as hex); only its address is ever shown (repr,
config problems, logs).
"""

from __future__ import annotations

from collections.abc import Sequence

from coincurve import PrivateKey

from popgate.verifiers.evm import keccak256, to_checksum_address
from popgate.verifiers.x402_channel import claim_batch_digest


class ClaimSigner:
    """A secp256k1 key held for signing claim batches (see module doc)."""

    __slots__ = ("_key", "address")

    def __init__(self, secret: bytes) -> None:
        text = secret.strip().decode("ascii", "replace")
        text = text[2:] if text[:2] in ("0x", "0X") else text
        try:
            raw = bytes.fromhex(text)
            if len(raw) != 32:
                raise ValueError
            self._key = PrivateKey(raw)
        except ValueError:
            raise ValueError("not a secp256k1 private key (expected 32 bytes as hex)") from None
        pub = self._key.public_key.format(compressed=False)[1:]
        self.address = to_checksum_address(keccak256(pub)[12:])

    def __repr__(self) -> str:
        return f"ClaimSigner({self.address})"

    def sign(self, entries: Sequence[tuple[bytes, int, int]], chain_id: int) -> str:
        """``0x`` r‖s‖v (v = 27/28, low s) over the claim batch of ``entries``
        (channel id, maxClaimableAmount, totalClaimed)."""
        sig = self._key.sign_recoverable(claim_batch_digest(entries, chain_id), hasher=None)
        return "0x" + sig[:64].hex() + bytes([sig[64] + 27]).hex()
