"""EIP-712 typed-data hashing for EIP-3009 ``TransferWithAuthorization``.

Only the two structs x402 ``exact`` needs are encoded, by hand, with no
generic type walker: ``EIP712Domain(string name,string version,uint256
chainId,address verifyingContract)`` and ``TransferWithAuthorization(address
from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32
nonce)``. Domain separators are cached (a handful per deployment).

The digest signed by the payer is
``keccak256(0x1901 || domainSeparator || hashStruct(message))``.
Tests cross-check every function against eth-account's generic encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from popgate.verifiers.evm import keccak256, parse_address

DOMAIN_TYPE = b"EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
TRANSFER_TYPE = (
    b"TransferWithAuthorization(address from,address to,uint256 value,"
    b"uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)
DOMAIN_TYPEHASH = keccak256(DOMAIN_TYPE)
TRANSFER_TYPEHASH = keccak256(TRANSFER_TYPE)
_UINT256_MAX = (1 << 256) - 1


@dataclass(frozen=True, slots=True)
class Domain:
    """An EIP-712 domain as USDC (FiatTokenV2) defines it."""

    name: str
    version: str
    chain_id: int
    verifying_contract: str  # 0x-hex address

    def separator(self) -> bytes:
        return domain_separator(self.name, self.version, self.chain_id, self.verifying_contract.lower())


def uint256_word(value: int) -> bytes:
    """A uint256 as its 32-byte ABI word; ValueError out of range."""
    if not 0 <= value <= _UINT256_MAX:
        raise ValueError("uint256 out of range")
    return value.to_bytes(32, "big")


def address_word(raw: bytes) -> bytes:
    """A 20-byte address as its 32-byte ABI word; ValueError for another length."""
    if len(raw) != 20:
        raise ValueError("address must be 20 bytes")
    return b"\x00" * 12 + raw


@lru_cache(maxsize=256)
def domain_separator(name: str, version: str, chain_id: int, verifying_contract: str) -> bytes:
    """Return ``hashStruct(EIP712Domain)``; raises ValueError on bad input."""
    return keccak256(
        DOMAIN_TYPEHASH
        + keccak256(name.encode())
        + keccak256(version.encode())
        + uint256_word(chain_id)
        + address_word(parse_address(verifying_contract))
    )


def transfer_struct_hash(
    from_: bytes, to: bytes, value: int, valid_after: int, valid_before: int, nonce: bytes
) -> bytes:
    """Return ``hashStruct(TransferWithAuthorization)`` for raw field values."""
    if len(nonce) != 32:
        raise ValueError("nonce must be 32 bytes")
    return keccak256(
        TRANSFER_TYPEHASH
        + address_word(from_)
        + address_word(to)
        + uint256_word(value)
        + uint256_word(valid_after)
        + uint256_word(valid_before)
        + nonce
    )


def typed_data_digest(separator: bytes, struct_hash: bytes) -> bytes:
    """Return the 32-byte EIP-712 signing digest."""
    return keccak256(b"\x19\x01" + separator + struct_hash)


def transfer_digest(
    domain: Domain,
    from_: bytes,
    to: bytes,
    value: int,
    valid_after: int,
    valid_before: int,
    nonce: bytes,
) -> bytes:
    """The digest an EIP-3009 ``transferWithAuthorization`` signer signs."""
    return typed_data_digest(
        domain.separator(),
        transfer_struct_hash(from_, to, value, valid_after, valid_before, nonce),
    )
