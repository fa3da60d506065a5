"""EIP-712 hashing and secp256k1 recovery, cross-checked against eth-account."""

from __future__ import annotations

import os

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import to_checksum_address as eth_checksum
from hypothesis import given
from hypothesis import strategies as st

from popgate.verifiers.eip712 import Domain, domain_separator, transfer_digest
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.evm import SECP256K1_N, keccak256, recover_address, to_checksum_address

SEPOLIA_USDC = "0x036CbD53842c5426634e7929541eC2318f3dCF7e"
KEY = "0x" + "11" * 32
ACCT = Account.from_key(KEY)


def typed(domain: Domain, frm: str, to: str, value: int, va: int, vb: int, nonce: bytes) -> dict:
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "TransferWithAuthorization": [
                {"name": "from", "type": "address"},
                {"name": "to", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "validAfter", "type": "uint256"},
                {"name": "validBefore", "type": "uint256"},
                {"name": "nonce", "type": "bytes32"},
            ],
        },
        "primaryType": "TransferWithAuthorization",
        "domain": {
            "name": domain.name,
            "version": domain.version,
            "chainId": domain.chain_id,
            "verifyingContract": domain.verifying_contract,
        },
        "message": {
            "from": frm,
            "to": to,
            "value": value,
            "validAfter": va,
            "validBefore": vb,
            "nonce": nonce,
        },
    }


def eth_digest(t: dict) -> bytes:
    m = encode_typed_data(full_message=t)
    return keccak256(b"\x19" + m.version + m.header + m.body)


def test_keccak_is_keccak_not_sha3() -> None:
    """keccak256('') is the Ethereum value, not FIPS SHA3-256."""
    assert keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


@given(st.binary(min_size=20, max_size=20))
def test_checksum_matches_eth_utils(raw: bytes) -> None:
    """EIP-55 output equals eth-utils for any address."""
    assert to_checksum_address(raw) == eth_checksum("0x" + raw.hex())


@given(
    st.sampled_from([("USDC", 84532), ("USD Coin", 8453), ("USD Coin", 1)]),
    st.integers(0, 2**256 - 1),
    st.integers(0, 2**64),
    st.integers(0, 2**64),
    st.binary(min_size=32, max_size=32),
    st.binary(min_size=20, max_size=20),
)
def test_digest_matches_eth_account(
    dom: tuple[str, int], value: int, va: int, vb: int, nonce: bytes, to: bytes
) -> None:
    """Our hand-rolled digest equals eth-account's generic EIP-712 encoder."""
    d = Domain(dom[0], "2", dom[1], SEPOLIA_USDC)
    frm = bytes.fromhex(ACCT.address[2:])
    ours = transfer_digest(d, frm, to, value, va, vb, nonce)
    assert ours == eth_digest(typed(d, ACCT.address, "0x" + to.hex(), value, va, vb, nonce))


def test_domain_separator_depends_on_every_field() -> None:
    """Changing name, version, chainId or contract changes the separator."""
    base = domain_separator("USDC", "2", 84532, SEPOLIA_USDC.lower())
    assert (
        len(
            {
                base,
                domain_separator("USD Coin", "2", 84532, SEPOLIA_USDC.lower()),
                domain_separator("USDC", "1", 84532, SEPOLIA_USDC.lower()),
                domain_separator("USDC", "2", 8453, SEPOLIA_USDC.lower()),
                domain_separator("USDC", "2", 84532, "0x" + "00" * 20),
            }
        )
        == 5
    )


def sign(digest: bytes) -> bytes:
    s = (
        Account._sign_hash(digest, KEY)
        if hasattr(Account, "_sign_hash")
        else Account.unsafe_sign_hash(digest, KEY)
    )
    return bytes(s.signature)


@pytest.mark.parametrize("seed", range(5))
def test_recover_round_trip(seed: int) -> None:
    """A signature by KEY over a random digest recovers KEY's address."""
    digest = os.urandom(32)
    assert recover_address(digest, sign(digest)) == bytes.fromhex(ACCT.address[2:])


def test_high_s_is_refused() -> None:
    """The malleated twin (n - s, flipped v) of a valid signature is refused as high_s."""
    digest = os.urandom(32)
    sig = sign(digest)
    s = SECP256K1_N - int.from_bytes(sig[32:64], "big")
    twin = sig[:32] + s.to_bytes(32, "big") + bytes([55 - sig[64]])
    with pytest.raises(VerificationError) as e:
        recover_address(digest, twin)
    assert e.value.reason == "high_s"


@pytest.mark.parametrize(
    "sig", [b"", b"\x01" * 64, b"\x00" * 65, b"\x01" * 64 + b"\x1d", b"\xff" * 64 + b"\x1b", b"\x01" * 66]
)
def test_bad_signatures(sig: bytes) -> None:
    """Wrong length, zero or out-of-range r/s, and bad v are bad_signature."""
    with pytest.raises(VerificationError) as e:
        recover_address(b"\x00" * 32, sig)
    assert e.value.reason == "bad_signature"


def test_v_zero_one_accepted() -> None:
    """v as 0/1 (not 27/28) recovers the same address."""
    digest = os.urandom(32)
    sig = sign(digest)
    assert recover_address(digest, sig[:64] + bytes([sig[64] - 27])) == recover_address(digest, sig)


def test_sdk_typed_data_signature_recovers() -> None:
    """A signature made through eth-account's sign_typed_data verifies with our digest."""
    d = Domain("USDC", "2", 84532, SEPOLIA_USDC)
    t = typed(d, ACCT.address, "0x" + "22" * 20, 10000, 0, 1790000300, b"\x07" * 32)
    signed = Account.sign_message(encode_typed_data(full_message=t), KEY)
    digest = transfer_digest(
        d, bytes.fromhex(ACCT.address[2:]), b"\x22" * 20, 10000, 0, 1790000300, b"\x07" * 32
    )
    assert recover_address(digest, bytes(signed.signature)) == bytes.fromhex(ACCT.address[2:])
