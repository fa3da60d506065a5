"""EIP-712 digest of a Permit2 ``PermitWitnessTransferFrom`` with the x402
``upto`` witness (the struct the payer signs for ``x402UptoPermit2Proxy``).

Encoded by hand like :mod:`verifiers.eip712`, with no generic type walker::

    EIP712Domain(string name,uint256 chainId,address verifyingContract)
      name = "Permit2", verifyingContract = PERMIT2_ADDRESS (no version)
    PermitWitnessTransferFrom(TokenPermissions permitted,address spender,
      uint256 nonce,uint256 deadline,Witness witness)
    TokenPermissions(address token,uint256 amount)
    Witness(address to,address facilitator,uint256 validAfter)

Tests cross-check the digest against eth-account's generic encoder and the
SDK client's own signature.
"""

from __future__ import annotations

from functools import lru_cache

from popgate.verifiers.eip712 import address_word, typed_data_digest, uint256_word
from popgate.verifiers.evm import keccak256, parse_address

# Canonical Permit2 (same address on every EVM chain) and the x402 upto proxy
# (the Permit2 spender), from the SDK's mechanisms/evm/constants.py.
PERMIT2_ADDRESS = "0x000000000022D473030F116dDEE9F6B43aC78BA3"
UPTO_PROXY_ADDRESS = "0x4020A4f3b7b90ccA423B9fabCc0CE57C6C240002"

DOMAIN_TYPEHASH = keccak256(b"EIP712Domain(string name,uint256 chainId,address verifyingContract)")
TOKEN_PERMISSIONS = b"TokenPermissions(address token,uint256 amount)"
UPTO_WITNESS = b"Witness(address to,address facilitator,uint256 validAfter)"
PERMIT_WITNESS = (
    b"PermitWitnessTransferFrom(TokenPermissions permitted,address spender,uint256 nonce,"
    b"uint256 deadline,Witness witness)" + TOKEN_PERMISSIONS + UPTO_WITNESS
)
TOKEN_PERMISSIONS_TYPEHASH = keccak256(TOKEN_PERMISSIONS)
WITNESS_TYPEHASH = keccak256(UPTO_WITNESS)
PERMIT_WITNESS_TYPEHASH = keccak256(PERMIT_WITNESS)


@lru_cache(maxsize=64)
def permit2_separator(chain_id: int) -> bytes:
    """``hashStruct(EIP712Domain)`` of Permit2 on ``chain_id``."""
    return keccak256(
        DOMAIN_TYPEHASH
        + keccak256(b"Permit2")
        + uint256_word(chain_id)
        + address_word(parse_address(PERMIT2_ADDRESS))
    )


def upto_digest(
    chain_id: int,
    *,
    token: bytes,
    amount: int,
    spender: bytes,
    nonce: int,
    deadline: int,
    to: bytes,
    facilitator: bytes,
    valid_after: int,
) -> bytes:
    """The 32-byte digest an upto payer signs; raises ValueError on bad input."""
    permitted = keccak256(TOKEN_PERMISSIONS_TYPEHASH + address_word(token) + uint256_word(amount))
    witness = keccak256(
        WITNESS_TYPEHASH + address_word(to) + address_word(facilitator) + uint256_word(valid_after)
    )
    struct = keccak256(
        PERMIT_WITNESS_TYPEHASH
        + permitted
        + address_word(spender)
        + uint256_word(nonce)
        + uint256_word(deadline)
        + witness
    )
    return typed_data_digest(permit2_separator(chain_id), struct)
