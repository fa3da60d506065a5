"""EVM primitives for offline payment checks: keccak-256, addresses, ecrecover,
and a cached ``eth_getCode`` lookup over JSON-RPC.

* keccak-256 is the original Keccak (pycryptodome), **not** ``hashlib.sha3_256``.
* :func:`recover_address` enforces low-s (``s <= n/2``, EIP-2) because USDC's
  ``ECRecover`` library rejects high-s signatures on chain: a high-s payment
  would pass an offline check and then fail at settlement.
* :class:`CodeLookup` answers "does this address have code?" (a deployed smart
  wallet or an EIP-7702 delegated EOA). Such payers must be verified by the
  facilitator (EIP-1271), never by ecrecover alone.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from coincurve import PublicKey
from Crypto.Hash import keccak as _keccak
from Crypto.Util import _raw_api

from popgate.verifiers.errors import VerificationError

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
SECP256K1_HALF_N = SECP256K1_N // 2


class _KeccakState(threading.local):
    """One reusable Keccak-256 state per thread (pycryptodome's C core,
    without a hash object per call: vouchers hash three times per request)."""

    def __init__(self) -> None:
        p = _RAW.VoidPointer()
        if _KECCAK.keccak_init(p.address_of(), _RAW.c_size_t(64), _RAW.c_ubyte(24)):
            raise RuntimeError("keccak_init failed")
        self.state, self.out = p.get(), _RAW.create_string_buffer(32)


_RAW: Any = _raw_api
_KECCAK: Any = getattr(_keccak, "_raw_keccak_lib")  # noqa: B009 - private, untyped
_KECCAK_STATE = _KeccakState()
_DIGEST_LEN, _KECCAK_PAD = _RAW.c_size_t(32), _RAW.c_ubyte(0x01)
c_size_t, c_uint8_ptr, get_raw_buffer = _RAW.c_size_t, _RAW.c_uint8_ptr, _RAW.get_raw_buffer


def keccak256(data: bytes) -> bytes:
    """Return the 32-byte Keccak-256 digest of ``data``."""
    st = _KECCAK_STATE
    if (
        _KECCAK.keccak_reset(st.state)
        or _KECCAK.keccak_absorb(st.state, c_uint8_ptr(data), c_size_t(len(data)))
        or _KECCAK.keccak_digest(st.state, st.out, _DIGEST_LEN, _KECCAK_PAD)
    ):
        return _keccak.new(digest_bits=256, data=data).digest()
    return bytes(get_raw_buffer(st.out))


def parse_address(text: str) -> bytes:
    """Return the 20 bytes of a ``0x``-prefixed hex address (any case).

    Raises ValueError when ``text`` is not exactly ``0x`` + 40 hex digits.
    """
    if len(text) != 42 or text[:2] not in ("0x", "0X"):
        raise ValueError("address must be 0x + 40 hex digits")
    try:
        return bytes.fromhex(text[2:])
    except ValueError as exc:
        raise ValueError("address is not hex") from exc


def to_checksum_address(raw: bytes) -> str:
    """Return the EIP-55 mixed-case form of a 20-byte address."""
    hexaddr = raw.hex()
    digest = keccak256(hexaddr.encode()).hex()
    return "0x" + "".join(
        c.upper() if c.isalpha() and int(digest[i], 16) >= 8 else c for i, c in enumerate(hexaddr)
    )


def split_signature(sig: bytes) -> tuple[int, int, int]:
    """Split a 65-byte ``r || s || v`` signature into ``(r, s, recovery_id)``.

    ``v`` may be 27/28 (Ethereum) or 0/1. Raises VerificationError
    ``bad_signature`` for any other length or ``v``, and ``high_s`` when
    ``s > n/2``.
    """
    if len(sig) != 65:
        raise VerificationError("bad_signature", f"signature is {len(sig)} bytes, not 65")
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:64], "big")
    v = sig[64]
    if v in (27, 28):
        v -= 27
    if v not in (0, 1):
        raise VerificationError("bad_signature", f"bad recovery byte {sig[64]}")
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise VerificationError("bad_signature", "r or s out of range")
    if s > SECP256K1_HALF_N:
        raise VerificationError("high_s", "s is in the upper half of the curve order")
    return r, s, v


def recover_address(digest: bytes, sig: bytes) -> bytes:
    """Recover the 20-byte signer address of a 32-byte ``digest``.

    Raises VerificationError (``bad_signature`` or ``high_s``); never returns
    a value for a signature it could not recover.
    """
    _, _, v = split_signature(sig)
    compact = sig[:64] + bytes((v,))  # r || s as they came (32-byte big-endian each)
    try:
        pub = PublicKey.from_signature_and_message(compact, digest, hasher=None)
    except Exception as exc:  # coincurve raises ValueError / its own errors
        raise VerificationError("bad_signature", f"recovery failed: {exc}") from exc
    return keccak256(pub.format(compressed=False)[1:])[12:]


# ---------------------------------------------------------------------------
# eth_getCode over JSON-RPC, cached
# ---------------------------------------------------------------------------


class RpcError(VerificationError):
    """The JSON-RPC endpoint failed or answered nonsense."""

    reason = "rpc_unavailable"


@dataclass(slots=True)
class CodeLookup:
    """Cached ``eth_getCode(address, "latest")`` per chain.

    ``endpoints`` maps a CAIP-2 network (``eip155:8453``) to a JSON-RPC URL.
    The aiohttp ``session`` is injected (and owned) by the caller. Positive
    answers (has code) are cached for ``ttl_code`` seconds and negative ones
    for ``ttl_empty``: an EOA may gain code later (EIP-7702 delegation), so
    the negative TTL stays short. Concurrent lookups of one address share a
    single request. ``now`` is always passed in by the caller.
    """

    session: aiohttp.ClientSession
    endpoints: Mapping[str, str]
    timeout: float = 2.0
    ttl_code: float = 3600.0
    ttl_empty: float = 300.0
    max_entries: int = 100_000
    _cache: dict[tuple[str, bytes], tuple[bool, float]] = field(default_factory=dict)
    _inflight: dict[tuple[str, bytes], asyncio.Future[bool]] = field(default_factory=dict)
    _ids: int = 0

    def supports(self, network: str) -> bool:
        return network in self.endpoints

    async def has_code(self, network: str, address: bytes, now: float) -> bool:
        """Return True when ``address`` has contract code on ``network``.

        Raises RpcError (``rpc_unavailable``) when the endpoint cannot answer;
        the caller fails closed (or routes to the facilitator) on that.
        """
        ck = (network, address)
        hit = self._cache.get(ck)
        if hit is not None and hit[1] > now:
            return hit[0]
        pending = self._inflight.get(ck)
        if pending is not None:
            return await asyncio.shield(pending)
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._inflight[ck] = fut
        try:
            result = await self._fetch(network, address)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        else:
            fut.set_result(result)
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[ck] = (result, now + (self.ttl_code if result else self.ttl_empty))
            return result
        finally:
            del self._inflight[ck]

    async def _fetch(self, network: str, address: bytes) -> bool:
        url = self.endpoints.get(network)
        if url is None:
            raise RpcError(detail=f"no JSON-RPC endpoint for {network}")
        self._ids += 1
        body = {
            "jsonrpc": "2.0",
            "id": self._ids,
            "method": "eth_getCode",
            "params": ["0x" + address.hex(), "latest"],
        }
        try:
            async with self.session.post(
                url, json=body, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as resp:
                if resp.status != 200:
                    raise RpcError(detail=f"HTTP {resp.status} from {network} RPC")
                data = json.loads(await resp.read())
        except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise RpcError(detail=f"{type(exc).__name__}: {exc}") from exc
        if not isinstance(data, dict) or "error" in data:
            raise RpcError(detail=f"RPC error: {data!r:.200}")
        code = data.get("result")
        if not isinstance(code, str) or not code.startswith("0x"):
            raise RpcError(detail=f"bad eth_getCode result {code!r:.80}")
        return len(code) > 2
