"""``exact`` EVM verification against the SDK-signed fixture table, replay
under concurrency, and payer routing (EOA offline vs smart wallet via the
facilitator), with a real local facilitator and JSON-RPC over loopback."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest

from popgate.gateway.payments.facilitator import FacilitatorClient
from popgate.gateway.stores.base import spend
from popgate.gateway.stores.memory import MemoryStore
from popgate.verifiers.errors import VerificationError
from popgate.verifiers.evm import CodeLookup, RpcError
from popgate.verifiers.x402 import Requirements, encode_header, extract
from popgate.verifiers.x402_exact import ExactConfig, ExactPayment, ExactVerifier, nonce_key
from tests.fixtures.x402.cases import CASES, NOW, PAYER
from tests.support.facilitator import FacilitatorState, running

ORDER = list(CASES)


class Reserving:
    """An ExactVerifier whose nonces are then claimed in ``store`` (what the gateway does)."""

    def __init__(self, store: MemoryStore, cfg: ExactConfig | None = None, **kw: Any) -> None:
        self.verifier, self.store = ExactVerifier(cfg, **kw), store

    async def verify(self, payment: Any, offered: list[Requirements], now: float) -> ExactPayment:
        paid = await self.verifier.verify(payment, offered, now)
        await spend(self.store, paid.spend)
        return paid


def offers(case: dict[str, Any]) -> list[Requirements]:
    return [Requirements.from_json(r) for r in case["requirements"]]


def payment(case: dict[str, Any]) -> Any:
    return extract({case["header_name"]: case["header_value"]}, accept_v1=True)


async def run_case(case: dict[str, Any], store: MemoryStore) -> Any:
    if "after" in case:  # the earlier case must have been accepted first
        await run_case(CASES[case["after"]], store)
    return await Reserving(store).verify(payment(case), offers(case), case["now"])


@pytest.mark.parametrize("name", ORDER)
async def test_fixture_table(name: str) -> None:
    """Each SDK-signed case gives the expected verdict and reason."""
    case, store = CASES[name], MemoryStore()
    exp = case["expect"]
    if exp["valid"]:
        result = await run_case(case, store)
        assert result.payer == PAYER == exp["payer"]
        assert result.amount == int(offers(case)[0].amount)
        assert result.verified_by == "offline"
    else:
        with pytest.raises(VerificationError) as e:
            await run_case(case, store)
        assert e.value.reason == exp["reason"], e.value.detail


async def test_concurrent_replay_exactly_one_wins() -> None:
    """50 concurrent copies of one payment: exactly one verifies, the rest are nonce_reused."""
    case, store = CASES["p01_sepolia"], MemoryStore()
    v = Reserving(store)
    results = await asyncio.gather(
        *(v.verify(payment(case), offers(case), NOW) for _ in range(50)), return_exceptions=True
    )
    ok = [r for r in results if not isinstance(r, BaseException)]
    assert len(ok) == 1
    assert {r.reason for r in results if isinstance(r, VerificationError)} == {"nonce_reused"}


async def test_nonce_reserved_with_ttl_to_valid_before() -> None:
    """The nonce key lives until validBefore, then the store forgets it."""
    t = [0.0]
    store = MemoryStore(clock=lambda: t[0])
    case = CASES["p01_sepolia"]
    r = await Reserving(store).verify(payment(case), offers(case), NOW)
    k = nonce_key(r.network, bytes.fromhex(r.payer[2:]), bytes.fromhex(r.nonce[2:]))
    assert await store.get(k) is not None
    t[0] = r.valid_before - NOW + 1
    assert await store.get(k) is None


async def test_invalid_payment_does_not_burn_nonce() -> None:
    """A rejected payment reserves nothing; the genuine one still passes."""
    store = MemoryStore()
    with pytest.raises(VerificationError):
        await run_case(CASES["n14_high_s"], store)
    await run_case(CASES["p01_sepolia"], store)


async def test_clock_policy_is_configurable() -> None:
    """A wider ahead-skew accepts what the default refuses as too_far_ahead."""
    case = CASES["n07_too_far_ahead"]
    v = Reserving(MemoryStore(), ExactConfig(max_ahead_skew=4000))
    assert (await v.verify(payment(case), offers(case), NOW)).payer == PAYER


def resign_as_smart_wallet(case: dict[str, Any]) -> str:
    raw = json.loads(base64.b64decode(case["header_value"]))
    raw["payload"]["signature"] = "0x" + "ee" * 100  # an EIP-1271 blob, not 65 bytes
    return encode_header(raw)


async def test_payer_with_code_goes_to_facilitator() -> None:
    """eth_getCode says the payer has code → facilitator /verify decides; cached."""
    async with running(FacilitatorState(clock=lambda: NOW)) as (url, st), aiohttp.ClientSession() as s:
        st.code_addresses.add(PAYER.lower())
        code = CodeLookup(s, {"eip155:84532": f"{url}/rpc"})
        v = Reserving(MemoryStore(), code_lookup=code, facilitator=FacilitatorClient(s, url))
        case = CASES["p01_sepolia"]
        r = await v.verify(payment(case), offers(case), NOW)
        assert r.verified_by == "facilitator" and st.calls["verify"] == 1
        smart = {**case, "header_value": resign_as_smart_wallet(case)}
        # same nonce: the facilitator says valid, our store says reused
        with pytest.raises(VerificationError) as e:
            await v.verify(payment(smart), offers(case), NOW)
        assert e.value.reason == "nonce_reused"
        assert st.calls["rpc"] == 1  # the second lookup hit the cache


async def test_eoa_stays_offline_with_code_lookup() -> None:
    """An address without code is verified offline; the facilitator is not called."""
    async with running(FacilitatorState(clock=lambda: NOW)) as (url, st), aiohttp.ClientSession() as s:
        code = CodeLookup(s, {"eip155:84532": f"{url}/rpc"})
        v = Reserving(MemoryStore(), code_lookup=code, facilitator=FacilitatorClient(s, url))
        case = CASES["p01_sepolia"]
        assert (await v.verify(payment(case), offers(case), NOW)).verified_by == "offline"
        assert st.calls["verify"] == 0 and st.calls["rpc"] == 1


async def test_smart_wallet_rejections() -> None:
    """Smart-wallet signature with no facilitator → bad_signature; has code, no
    facilitator → smart_wallet_unsupported; RPC down, no facilitator → rpc_unavailable."""
    case = CASES["p01_sepolia"]
    smart = {**case, "header_value": resign_as_smart_wallet(case)}
    with pytest.raises(VerificationError) as e:
        await Reserving(MemoryStore()).verify(payment(smart), offers(case), NOW)
    assert e.value.reason == "bad_signature"
    async with running() as (url, st), aiohttp.ClientSession() as s:
        st.code_addresses.add(PAYER.lower())
        v = Reserving(MemoryStore(), code_lookup=CodeLookup(s, {"eip155:84532": f"{url}/rpc"}))
        with pytest.raises(VerificationError) as e:
            await v.verify(payment(case), offers(case), NOW)
        assert e.value.reason == "smart_wallet_unsupported"
        dead = CodeLookup(s, {"eip155:84532": "http://127.0.0.1:9/rpc"}, timeout=0.5)
        with pytest.raises(RpcError) as e:
            await Reserving(MemoryStore(), code_lookup=dead).verify(payment(case), offers(case), NOW)
        assert e.value.reason == "rpc_unavailable"


async def test_facilitator_rejection_is_mapped() -> None:
    """A smart-wallet payment the facilitator rejects surfaces our stable reason."""
    async with (
        running(FacilitatorState(clock=lambda: NOW + 10_000)) as (url, st),
        aiohttp.ClientSession() as s,
    ):
        st.code_addresses.add(PAYER.lower())
        v = Reserving(
            MemoryStore(),
            code_lookup=CodeLookup(s, {"eip155:84532": f"{url}/rpc"}),
            facilitator=FacilitatorClient(s, url),
        )
        case = CASES["p01_sepolia"]
        with pytest.raises(VerificationError) as e:  # facilitator's clock: already expired
            await v.verify(payment(case), offers(case), NOW)
        assert e.value.reason == "expired"


async def test_code_lookup_coalesces_concurrent_requests() -> None:
    """Ten concurrent lookups of one address make one RPC call."""
    async with running() as (url, st), aiohttp.ClientSession() as s:
        code = CodeLookup(s, {"eip155:84532": f"{url}/rpc"})
        got = await asyncio.gather(*(code.has_code("eip155:84532", b"\x01" * 20, 0.0) for _ in range(10)))
        assert got == [False] * 10 and st.calls["rpc"] == 1
        assert not await code.has_code("eip155:84532", b"\x01" * 20, 299.0)
        assert st.calls["rpc"] == 1
        await code.has_code("eip155:84532", b"\x01" * 20, 301.0)  # negative TTL expired
        assert st.calls["rpc"] == 2
