"""x402 ``batch-settlement`` on EVM: channel identity, vouchers, payloads.

Facts from the official SDK (``x402.mechanisms.evm.batch_settlement``,
2.25): every typed-data signature of the scheme uses the EIP-712 domain
``{name: "x402 Batch Settlement", version: "1", chainId,
verifyingContract: 0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003}``;
``channelId = EIP712Hash(ChannelConfig)`` under that domain; a voucher is
``Voucher(bytes32 channelId, uint128 maxClaimableAmount)`` with a cumulative
amount. Payloads are ``deposit`` (voucher + a deposit authorization),
``voucher`` and ``refund`` (a zero-charge voucher, optional ``amount``).

Parsing is strict and pure; a problem raises :class:`VerificationError`
with the scheme's own wire code (``invalid_batch_settlement_evm_*``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from popgate.verifiers.eip712 import domain_separator, typed_data_digest
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.evm import keccak256

SCHEME = "batch-settlement"
BATCH_SETTLEMENT_ADDRESS = "0x4020074e9dF2ce1deE5A9C1b5c3f541D02a10003"
DOMAIN_NAME = "x402 Batch Settlement"
DOMAIN_VERSION = "1"
MIN_WITHDRAW_DELAY = 900
MAX_WITHDRAW_DELAY = 2_592_000
CHANNEL_CONFIG_TYPEHASH = keccak256(
    b"ChannelConfig(address payer,address payerAuthorizer,address receiver,"
    b"address receiverAuthorizer,address token,uint40 withdrawDelay,bytes32 salt)"
)
VOUCHER_TYPEHASH = keccak256(b"Voucher(bytes32 channelId,uint128 maxClaimableAmount)")
_CLAIM_ENTRY = b"ClaimEntry(bytes32 channelId,uint128 maxClaimableAmount,uint128 totalClaimed)"
CLAIM_ENTRY_TYPEHASH = keccak256(_CLAIM_ENTRY)
CLAIM_BATCH_TYPEHASH = keccak256(b"ClaimBatch(ClaimEntry[] claims)" + _CLAIM_ENTRY)
ZERO_ADDRESS = b"\x00" * 20
_UINT128_MAX = (1 << 128) - 1

_P = "invalid_batch_settlement_evm_"
ERR_PAYLOAD_TYPE = _P + "payload_type"
ERR_VOUCHER_PAYLOAD = _P + "voucher_payload"
ERR_DEPOSIT_PAYLOAD = _P + "deposit_payload"
ERR_REFUND_PAYLOAD = _P + "refund_payload"
ERR_INVALID_CHANNEL_ID = _P + "channel_id_invalid"
ERR_CHANNEL_ID_MISMATCH = _P + "channel_id_mismatch"
ERR_RECEIVER_MISMATCH = _P + "receiver_mismatch"
ERR_RECEIVER_AUTHORIZER_MISMATCH = _P + "receiver_authorizer_mismatch"
ERR_TOKEN_MISMATCH = _P + "token_mismatch"
ERR_WITHDRAW_DELAY_MISMATCH = _P + "withdraw_delay_mismatch"
ERR_WITHDRAW_DELAY_OUT_OF_RANGE = _P + "withdraw_delay_out_of_range"
ERR_NETWORK_MISMATCH = _P + "network_mismatch"
ERR_VOUCHER_SIGNATURE = _P + "voucher_signature"
ERR_CUMULATIVE_EXCEEDS_BALANCE = _P + "cumulative_exceeds_balance"
ERR_CUMULATIVE_BELOW_CLAIMED = _P + "cumulative_below_claimed"
ERR_CUMULATIVE_MISMATCH = _P + "cumulative_amount_mismatch"
ERR_DEPOSIT_BELOW_MIN = _P + "deposit_below_min_deposit"
ERR_REFUND_AMOUNT_INVALID = _P + "refund_amount_invalid"
ERR_CHANNEL_BUSY = _P + "channel_busy"
ERR_STATE_UNAVAILABLE = _P + "verification_state_unavailable"
# popgate's own (the SDK has no code for it): the payer started a timed
# withdrawal and the window left is too short to claim this voucher.
ERR_WITHDRAW_WINDOW = _P + "withdraw_window_expired"

_ADDR = re.compile(r"0[xX][0-9a-fA-F]{40}")
_B32 = re.compile(r"0[xX][0-9a-fA-F]{64}")
_SIG = re.compile(r"0[xX][0-9a-fA-F]{2,8192}")  # and an even number of digits (parse_voucher)
_UINT = re.compile(r"(?:0|[1-9][0-9]{0,38})")


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """The immutable channel identity (raw bytes for addresses)."""

    payer: bytes
    payer_authorizer: bytes
    receiver: bytes
    receiver_authorizer: bytes
    token: bytes
    withdraw_delay: int
    salt: bytes

    def struct_hash(self) -> bytes:
        def a(raw: bytes) -> bytes:
            return b"\x00" * 12 + raw

        return keccak256(
            CHANNEL_CONFIG_TYPEHASH
            + a(self.payer)
            + a(self.payer_authorizer)
            + a(self.receiver)
            + a(self.receiver_authorizer)
            + a(self.token)
            + self.withdraw_delay.to_bytes(32, "big")
            + self.salt
        )

    def to_json(self) -> dict[str, Any]:
        """The SDK's camelCase shape (lower-case hex)."""
        return {
            "payer": "0x" + self.payer.hex(),
            "payerAuthorizer": "0x" + self.payer_authorizer.hex(),
            "receiver": "0x" + self.receiver.hex(),
            "receiverAuthorizer": "0x" + self.receiver_authorizer.hex(),
            "token": "0x" + self.token.hex(),
            "withdrawDelay": self.withdraw_delay,
            "salt": "0x" + self.salt.hex(),
        }


@dataclass(frozen=True, slots=True)
class Voucher:
    channel_id: bytes
    max_claimable: int
    signature: bytes


@dataclass(frozen=True, slots=True)
class BatchPayload:
    """A parsed ``deposit`` / ``voucher`` / ``refund`` payload."""

    kind: str
    config: ChannelConfig
    voucher: Voucher
    deposit_amount: int = 0  # deposit only
    refund_amount: int | None = None  # refund only; None = the whole rest

    @property
    def channel_id(self) -> str:
        return "0x" + self.voucher.channel_id.hex()


@lru_cache(maxsize=64)
def domain(chain_id: int) -> bytes:
    """The batch-settlement EIP-712 domain separator on ``chain_id``."""
    return domain_separator(DOMAIN_NAME, DOMAIN_VERSION, chain_id, BATCH_SETTLEMENT_ADDRESS.lower())


@lru_cache(maxsize=65536)
def channel_id(config: ChannelConfig, chain_id: int) -> bytes:
    """``EIP712Hash(ChannelConfig)``: the chain-bound channel id (cached: an
    agent sends the same config with every voucher)."""
    return typed_data_digest(domain(chain_id), config.struct_hash())


def voucher_digest(channel: bytes, max_claimable: int, chain_id: int) -> bytes:
    """The digest a payer authorizer signs for one cumulative voucher."""
    if len(channel) != 32 or not 0 <= max_claimable <= _UINT128_MAX:
        raise ValueError("bad voucher fields")
    body = keccak256(VOUCHER_TYPEHASH + channel + max_claimable.to_bytes(32, "big"))
    return typed_data_digest(domain(chain_id), body)


def claim_batch_digest(entries: Sequence[tuple[bytes, int, int]], chain_id: int) -> bytes:
    """The digest the receiver authorizer signs for ``claimWithSignature``:
    ``ClaimBatch(ClaimEntry[] claims)`` over ``(channelId, maxClaimableAmount,
    totalClaimed)`` entries, in the batch-settlement domain of ``chain_id``."""
    hashes = []
    for channel, max_claimable, total in entries:
        if len(channel) != 32 or not 0 <= total <= max_claimable <= _UINT128_MAX:
            raise ValueError("bad claim entry")
        amounts = max_claimable.to_bytes(32, "big") + total.to_bytes(32, "big")
        hashes.append(keccak256(CLAIM_ENTRY_TYPEHASH + channel + amounts))
    body = keccak256(CLAIM_BATCH_TYPEHASH + keccak256(b"".join(hashes)))
    return typed_data_digest(domain(chain_id), body)


def _field(o: Mapping[str, Any], name: str, pattern: re.Pattern[str], err: str) -> str:
    v = o.get(name)
    if isinstance(v, int) and not isinstance(v, bool) and pattern is _UINT:
        v = str(v)
    if not isinstance(v, str) or not pattern.fullmatch(v):
        raise VerificationError(err, f"{name} missing or badly formed")
    return v


def _addr(o: Mapping[str, Any], name: str, err: str) -> bytes:
    return bytes.fromhex(_field(o, name, _ADDR, err)[2:])


_CONFIG_KEYS = (
    "payer",
    "payerAuthorizer",
    "receiver",
    "receiverAuthorizer",
    "token",
    "withdrawDelay",
    "salt",
)


def parse_config(o: Any, err: str) -> ChannelConfig:
    if not isinstance(o, dict):
        raise VerificationError(err, "channelConfig must be an object")
    # An agent sends the same config with every voucher: parsed once, then the same
    # object (so channel_id's cache hits on it); only plain str/int values are cached.
    values = tuple(o.get(k) for k in _CONFIG_KEYS)
    if all(type(v) is str for v in values[:5]) and type(values[5]) in (str, int) and type(values[6]) is str:
        return _parse_config_cached(values, err)
    return _parse_config(o, err)


@lru_cache(maxsize=65536)
def _parse_config_cached(values: tuple[Any, ...], err: str) -> ChannelConfig:
    return _parse_config(dict(zip(_CONFIG_KEYS, values, strict=True)), err)


def _parse_config(o: Mapping[str, Any], err: str) -> ChannelConfig:
    delay = int(_field(o, "withdrawDelay", _UINT, err))
    if delay >= 1 << 40:
        raise VerificationError(err, "withdrawDelay exceeds uint40")
    return ChannelConfig(
        _addr(o, "payer", err),
        _addr(o, "payerAuthorizer", err),
        _addr(o, "receiver", err),
        _addr(o, "receiverAuthorizer", err),
        _addr(o, "token", err),
        delay,
        bytes.fromhex(_field(o, "salt", _B32, err)[2:]),
    )


def parse_voucher(o: Any, err: str) -> Voucher:
    if not isinstance(o, dict):
        raise VerificationError(err, "voucher must be an object")
    cid = _field(o, "channelId", _B32, ERR_INVALID_CHANNEL_ID)
    amount = int(_field(o, "maxClaimableAmount", _UINT, err))
    if amount > _UINT128_MAX:
        raise VerificationError(err, "maxClaimableAmount exceeds uint128")
    sig = _field(o, "signature", _SIG, err)
    if len(sig) % 2:
        raise VerificationError(err, "signature missing or badly formed")
    return Voucher(bytes.fromhex(cid[2:]), amount, bytes.fromhex(sig[2:]))


_ERRS = {"deposit": ERR_DEPOSIT_PAYLOAD, "voucher": ERR_VOUCHER_PAYLOAD, "refund": ERR_REFUND_PAYLOAD}


def parse_payload(payload: Mapping[str, Any]) -> BatchPayload:
    """Parse ``PaymentPayload.payload`` of the batch-settlement scheme."""
    kind = payload.get("type")
    if not isinstance(kind, str) or kind not in _ERRS:
        raise VerificationError(ERR_PAYLOAD_TYPE, "type must be deposit, voucher or refund")
    err = _ERRS[kind]
    config = parse_config(payload.get("channelConfig"), err)
    voucher = parse_voucher(payload.get("voucher"), err)
    if kind == "deposit":
        dep = payload.get("deposit")
        if not isinstance(dep, dict) or not isinstance(dep.get("authorization"), dict):
            raise VerificationError(err, "deposit needs amount and authorization")
        amount = int(_field(dep, "amount", _UINT, err))
        if amount <= 0 or amount > _UINT128_MAX:
            raise VerificationError(err, "deposit amount out of range")
        return BatchPayload(kind, config, voucher, deposit_amount=amount)
    if kind == "refund" and payload.get("amount") is not None:
        amount = int(_field(payload, "amount", _UINT, err))
        if amount <= 0:
            raise VerificationError(ERR_REFUND_AMOUNT_INVALID, "refund amount must be > 0")
        return BatchPayload(kind, config, voucher, refund_amount=amount)
    return BatchPayload(kind, config, voucher)
