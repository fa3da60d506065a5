"""A local x402 facilitator for tests: ``/supported``, ``/verify``, ``/settle``
(plus ``/rpc`` answering ``eth_getCode``), on a free loopback port.

It is a *second opinion*: signatures are checked with eth-account's generic
EIP-712 encoder and recovery (``encode_typed_data`` + ``recover_message``),
not with popgate's verifier, and responses are built with the SDK's own
pydantic models (``VerifyResponse`` / ``SettleResponse``) so their JSON shape
is the SDK's. Checks follow the SDK facilitator's order and reason codes
(``x402.mechanisms.evm.exact.facilitator``); on-chain effects are simulated:
a settled nonce is spent, and high-s signatures are refused as USDC does.
``upto`` (Permit2) is answered by :mod:`tests.support.upto_facilitator`.

Fault switches on :class:`FacilitatorState`: ``latency`` (seconds before
answering), ``verify_mode`` / ``settle_mode`` (``ok``, ``http500``,
``reject400`` for verify, ``fail``/``pending``/``hang`` for settle), and
``on_settled`` (a callback run once the money moved, before the answer: a
test breaks the store there), ``funded`` (payers with a balance; others get ``insufficient_balance``, as a
fresh key would on chain), ``pending_rounds`` (how many settle calls for one payment, the broadcasting
one included, are answered ``settlement_pending`` before the receipt is
"seen"; later calls with the same payload reconcile to that one tx).

Re-settling an authorization it already settled is answered like the SDK
facilitator does: ``invalid_exact_evm_nonce_already_used`` (the nonce is
spent on "chain"). With ``idempotent = True`` it answers instead like a
facilitator that keeps its settlement records: the very same payment
(same signature) gets ``success`` with the original transaction again; a
different authorization with that nonce is still refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from eth_account import Account
from eth_account.messages import encode_typed_data
from x402.schemas import SettleResponse, SupportedResponse, VerifyResponse

from tests.support.channel_chain import ChannelChain, batch_settle, batch_verify
from tests.support.upto_facilitator import FACILITATOR_ADDRESS, upto_settle, upto_verify

HALF_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141 // 2
NETWORKS = ("eip155:84532", "eip155:8453")


@dataclass
class FacilitatorState:
    clock: Callable[[], float] = time.time
    latency: float = 0.0
    verify_mode: str = "ok"  # ok | http500 | reject400
    settle_mode: str = "ok"  # ok | fail | pending | http500 | hang
    pending_rounds: int = 1
    idempotent: bool = False  # re-settle of a settled payment → its original tx
    code_addresses: set[str] = field(default_factory=set)  # lower-case; "smart wallets"
    funded: set[str] | None = None  # lower-case payers holding funds (None: every payer)
    spent: set[tuple[str, str, str]] = field(default_factory=set)
    pending: dict[tuple[str, str, str], list[Any]] = field(default_factory=dict)
    settled: list[dict[str, Any]] = field(default_factory=list)
    calls: Counter[str] = field(default_factory=Counter)
    chain: ChannelChain = field(default_factory=ChannelChain)  # batch-settlement channels
    no_permit2_allowance: set[str] = field(default_factory=set)  # lower-case payers (upto)
    answer_delay: float = 0.0  # upto: seconds between carrying out a settle and answering it
    on_settled: Callable[[], None] | None = (
        None  # exact: runs after a settle is carried out, before the answer
    )


def eip3009_typed_data(a: dict[str, Any], req: dict[str, Any]) -> dict[str, Any]:
    """The EIP-712 typed data of an EIP-3009 authorization ``a`` for requirements ``req``
    (eth-account's generic encoder: a second opinion on verifiers/eip712.py)."""
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
            "name": req["extra"]["name"],
            "version": req["extra"]["version"],
            "chainId": int(req["network"].split(":")[1]),
            "verifyingContract": req["asset"],
        },
        "message": {
            "from": a["from"],
            "to": a["to"],
            "value": int(a["value"]),
            "validAfter": int(a["validAfter"]),
            "validBefore": int(a["validBefore"]),
            "nonce": bytes.fromhex(a["nonce"][2:]),
        },
    }


def _recover(payload: dict[str, Any], req: dict[str, Any]) -> str:
    typed = eip3009_typed_data(payload["payload"]["authorization"], req)
    return str(
        Account.recover_message(
            encode_typed_data(full_message=typed), signature=payload["payload"]["signature"]
        )
    )


V1_NAMES = {"base-sepolia": "eip155:84532", "base": "eip155:8453"}


def normalize(body: dict[str, Any]) -> dict[str, Any]:
    """Fold a v1 request (top-level scheme/network, ``maxAmountRequired``,
    v1 network names) into the v2 shape the checks below read."""
    payload, req = dict(body["paymentPayload"]), dict(body["paymentRequirements"])
    if payload.get("x402Version") == 1:
        payload["accepted"] = {
            "scheme": payload["scheme"],
            "network": V1_NAMES.get(payload["network"], payload["network"]),
        }
        req["network"] = V1_NAMES.get(req["network"], req["network"])
        req["amount"] = req.pop("maxAmountRequired", req.get("amount"))
    return {**body, "paymentPayload": payload, "paymentRequirements": req}


def check(state: FacilitatorState, body: dict[str, Any]) -> tuple[str | None, str | None]:
    """Return ``(invalid_reason, payer)``; reason None when valid."""
    body = normalize(body)
    payload, req = body["paymentPayload"], body["paymentRequirements"]
    a = payload["payload"]["authorization"]
    payer = a["from"]
    if payload["accepted"]["scheme"] != "exact" or req["scheme"] != "exact":
        return "unsupported_scheme", payer
    if payload["accepted"]["network"] != req["network"]:
        return "network_mismatch", payer
    if "name" not in req.get("extra", {}) or "version" not in req.get("extra", {}):
        return "missing_eip712_domain", payer
    if a["to"].lower() != req["payTo"].lower():
        return "invalid_exact_evm_payload_recipient_mismatch", payer
    if int(a["value"]) != int(req["amount"]):
        return "invalid_exact_evm_payload_authorization_value_mismatch", payer
    now = int(state.clock())
    if int(a["validBefore"]) < now + 6:
        return "invalid_exact_evm_payload_authorization_valid_before", payer
    if int(a["validAfter"]) > now:
        return "invalid_exact_evm_payload_authorization_valid_after", payer
    sig = bytes.fromhex(payload["payload"]["signature"][2:])
    if payer.lower() in state.code_addresses:
        ok = len(sig) > 0  # EIP-1271 simulated: the "wallet" accepts any signature
    else:
        try:
            ok = (
                len(sig) == 65
                and int.from_bytes(sig[32:64], "big") <= HALF_N
                and _recover(payload, req).lower() == payer.lower()
            )
        except Exception:
            ok = False
    if not ok:
        return "invalid_exact_evm_payload_signature", payer
    if (req["network"], payer.lower(), a["nonce"].lower()) in state.spent:
        return "invalid_exact_evm_nonce_already_used", payer
    if state.funded is not None and payer.lower() not in state.funded:
        return "invalid_exact_evm_insufficient_balance", payer
    return None, payer


def make_app(state: FacilitatorState) -> web.Application:
    async def pause() -> None:
        if state.latency:
            await asyncio.sleep(state.latency)

    async def supported(request: web.Request) -> web.Response:
        state.calls["supported"] += 1
        await pause()
        resp = SupportedResponse.model_validate(
            {
                "kinds": [
                    {"x402Version": v, "scheme": "exact", "network": n} for v in (1, 2) for n in NETWORKS
                ]
                + [
                    {
                        "x402Version": 2,
                        "scheme": "upto",
                        "network": n,
                        "extra": {"facilitatorAddress": FACILITATOR_ADDRESS},
                    }
                    for n in NETWORKS
                ],
                "extensions": [],
                "signers": {"eip155:*": ["0x" + "fa" * 20]},
            }
        )
        return web.json_response(resp.model_dump(by_alias=True, exclude_none=True))

    async def verify(request: web.Request) -> web.Response:
        state.calls["verify"] += 1
        await pause()
        if state.verify_mode == "http500":
            return web.Response(status=500, text="boom")
        body = await request.json()
        if body.get("paymentRequirements", {}).get("scheme") == "batch-settlement":
            return web.json_response(batch_verify(state.chain, body))
        if body.get("paymentRequirements", {}).get("scheme") == "upto":
            return web.json_response(upto_verify(state, body))
        reason, payer = check(state, body)
        out = VerifyResponse(is_valid=reason is None, invalid_reason=reason, payer=payer)
        status = 400 if reason and state.verify_mode == "reject400" else 200
        return web.json_response(out.model_dump(by_alias=True, exclude_none=True), status=status)

    async def settle(request: web.Request) -> web.Response:
        state.calls["settle"] += 1
        await pause()
        if state.settle_mode == "http500":
            return web.Response(status=500, text="boom")
        if state.settle_mode == "hang":
            await asyncio.sleep(3600)
        body = normalize(await request.json())
        if body["paymentRequirements"].get("scheme") == "batch-settlement":
            return web.json_response(batch_settle(state.chain, body))
        if body["paymentRequirements"].get("scheme") == "upto":
            done = upto_settle(state, body)  # on "chain" now, whether the caller hears it or not
            if state.answer_delay:
                await asyncio.sleep(state.answer_delay)
            return web.json_response(done)
        req, a = body["paymentRequirements"], body["paymentPayload"]["payload"]["authorization"]
        nkey = (req["network"], a["from"].lower(), a["nonce"].lower())
        tx = "0x" + hashlib.sha256(repr(nkey).encode()).hexdigest()
        net, payer = req["network"], a["from"]
        if nkey in state.pending:  # reconcile a broadcast tx, never re-broadcast
            rounds = state.pending[nkey]
            rounds[0] -= 1
            if rounds[0] > 0:
                return _settle(False, tx, net, payer, "settlement_pending")
            del state.pending[nkey]
            return _done(state, body, tx)
        if state.idempotent and nkey in state.spent:
            sig = body["paymentPayload"]["payload"]["signature"].lower()
            done = next((s for s in state.settled if s["signature"] == sig), None)
            if done is not None:
                return _settle(True, done["transaction"], net, payer)
        reason, payer = check(state, body)
        if reason is not None:
            return _settle(False, "", net, payer, reason)
        if state.settle_mode == "fail":
            return _settle(False, "", net, payer, "transaction_failed")
        if state.settle_mode == "pending":
            state.spent.add(nkey)
            state.pending[nkey] = [state.pending_rounds]
            return _settle(False, tx, net, payer, "settlement_pending")
        state.spent.add(nkey)
        return _done(state, body, tx)

    async def rpc(request: web.Request) -> web.Response:
        state.calls["rpc"] += 1
        body = await request.json()
        addr = body["params"][0].lower()
        code = "0x6080" if addr in state.code_addresses else "0x"
        return web.json_response({"jsonrpc": "2.0", "id": body["id"], "result": code})

    app = web.Application()
    app.add_routes(
        [
            web.get("/supported", supported),
            web.post("/verify", verify),
            web.post("/settle", settle),
            web.post("/rpc", rpc),
        ]
    )
    return app


def _settle(ok: bool, tx: str, network: str, payer: str | None, reason: str | None = None) -> web.Response:
    out = SettleResponse(success=ok, transaction=tx, network=network, payer=payer, error_reason=reason)
    return web.json_response(out.model_dump(by_alias=True, exclude_none=True))


def _done(state: FacilitatorState, body: dict[str, Any], tx: str) -> web.Response:
    req, a = body["paymentRequirements"], body["paymentPayload"]["payload"]["authorization"]
    state.spent.add((req["network"], a["from"].lower(), a["nonce"].lower()))
    state.settled.append(
        {
            "network": req["network"],
            "payer": a["from"],
            "to": a["to"],
            "value": a["value"],
            "nonce": a["nonce"],
            "transaction": tx,
            "signature": body["paymentPayload"]["payload"]["signature"].lower(),
        }
    )
    if state.on_settled is not None:
        state.on_settled()
    return _settle(True, tx, req["network"], a["from"])


@asynccontextmanager
async def running(state: FacilitatorState | None = None) -> AsyncIterator[tuple[str, FacilitatorState]]:
    """Serve a facilitator on 127.0.0.1:<free port>; yield ``(base_url, state)``."""
    state = state or FacilitatorState()
    runner = web.AppRunner(make_app(state), shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}", state
    finally:
        await runner.cleanup()


def serve_forever(port: int) -> None:
    """``python -m tests.support.facilitator PORT``: the stand-in as a process (benchmarks)."""
    web.run_app(make_app(FacilitatorState()), host="127.0.0.1", port=port, print=None)


if __name__ == "__main__":
    import sys

    serve_forever(int(sys.argv[1]))
