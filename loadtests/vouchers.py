"""VoucherAgent: pays ``/paid/*`` with x402 batch-settlement vouchers, and cheats.

Each user opens its own channel (a fresh test key; the run's facilitator
keeps channel state, no funds needed): an SDK deposit, then one cumulative
voucher per request, topping up when the deposit runs out. Between honest
requests it tries, and every success is a breach (fails the run):

* replaying the voucher just accepted;
* a non-increasing voucher (cumulative = what is already charged);
* a voucher for another channel (its own signature over a foreign channelId);
* the next voucher sent twice at once (two concurrent copies: at most one
  may reach the origin; both reaching it is a breach).
"""

from __future__ import annotations

import base64
import json
import os
from typing import Any

import gevent
from eth_account import Account
from locust import between, task
from x402.mechanisms.evm.batch_settlement.client import BatchSettlementEvmScheme
from x402.mechanisms.evm.batch_settlement.client.eip3009 import (
    create_batch_settlement_eip3009_deposit_payload,
)
from x402.mechanisms.evm.batch_settlement.client.voucher import sign_voucher
from x402.mechanisms.evm.batch_settlement.utils import compute_channel_id
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import PaymentRequirements

from loadtests.attackers import Attacker
from loadtests.users import is_shed, upstream_json

PATH = "/paid/vouchers"


class VoucherAgent(Attacker):
    weight = 2
    wait_time = between(0.05, 0.2)
    net_octet = 9

    def on_start(self) -> None:
        super().on_start()
        self.signer = EthAccountSigner(Account.from_key(os.urandom(32)))
        self.scheme = BatchSettlementEvmScheme(self.signer)
        self.req: PaymentRequirements | None = None
        self.charged = self.balance = 0

    def _offer(self) -> PaymentRequirements | None:
        """The 402's batch-settlement offer. The ask is anonymous, so under overload popgate may
        shed it (503 overloaded): wait (Retry-After, a second here) and ask again, 3 times."""
        for _ in range(3):
            got = self._ask()
            if got != "shed":
                return got
            gevent.sleep(1.0)
        return None

    def _ask(self) -> PaymentRequirements | str | None:
        with self.client.get(
            PATH, name=self.name("GET /paid/* (402)"), catch_response=True, headers=self.headers()
        ) as resp:
            header = resp.headers.get("PAYMENT-REQUIRED")
            if is_shed(resp):
                resp.success()
                self.tally.notes["payer_ask_shed"] += 1
                return "shed"
            if resp.status_code != 402 or not header:
                resp.failure(f"expected a 402 with PAYMENT-REQUIRED, got {resp.status_code}")
                return None
            resp.success()
        accepts = json.loads(base64.b64decode(header))["accepts"]
        offer = next((a for a in accepts if a["scheme"] == "batch-settlement"), None)
        return None if offer is None else PaymentRequirements(**offer)

    def _header(self, payload: dict[str, Any]) -> str:
        assert self.req is not None
        body = {"x402Version": 2, "payload": payload, "accepted": self.req.model_dump(by_alias=True)}
        return base64.b64encode(json.dumps(body).encode()).decode()

    def _voucher(self, cumulative: int, channel: str | None = None) -> dict[str, Any]:
        assert self.req is not None
        cfg = self.scheme.build_channel_config(self.req)
        cid = channel or compute_channel_id(cfg, self.req.network)
        v = sign_voucher(self.signer, cid, cumulative, self.req.network)
        return {"type": "voucher", "channelConfig": cfg.to_dict(), "voucher": v.to_dict()}

    def _next(self) -> dict[str, Any]:
        assert self.req is not None
        nxt = self.charged + int(self.req.amount)
        if nxt <= self.balance:
            return self._voucher(nxt)
        cfg = self.scheme.build_channel_config(self.req)
        amount = int((self.req.extra or {}).get("minDeposit", int(self.req.amount) * 10))
        dep = create_batch_settlement_eip3009_deposit_payload(self.signer, self.req, cfg, amount, nxt)
        return dep.to_dict()

    def _pay(self, payload: dict[str, Any]) -> bool:
        header = self._header(payload)
        if (
            self.honest("GET", PATH, self.headers({"PAYMENT-SIGNATURE": header}), "GET /paid/* voucher")
            is None
        ):
            return False
        self.charged = int(payload["voucher"]["maxClaimableAmount"])
        if payload["type"] == "deposit":
            self.balance += int(payload["deposit"]["amount"])
        self.tally.paid["x402-batch"] += 1
        return True

    @task
    def pay_and_cheat(self) -> None:
        if self.req is None:
            self.req = self._offer()
            if self.req is None:
                return
        payload = self._next()
        if not self._pay(payload):
            self.req = None  # start over on a fresh offer (never reuse a broken base)
            return
        accepted = self._header(payload)
        self.attempt(
            "voucher_replay", "GET", PATH, self.headers({"PAYMENT-SIGNATURE": accepted}), "REPLAY voucher"
        )
        stale = self._header(self._voucher(self.charged))
        self.attempt(
            "voucher_not_increasing",
            "GET",
            PATH,
            self.headers({"PAYMENT-SIGNATURE": stale}),
            "NON-INCREASING voucher",
        )
        foreign = self._header(
            self._voucher(self.charged + int(self.req.amount), "0x" + os.urandom(32).hex())
        )
        self.attempt(
            "voucher_other_channel",
            "GET",
            PATH,
            self.headers({"PAYMENT-SIGNATURE": foreign}),
            "OTHER-CHANNEL voucher",
        )
        self._concurrent()

    def _concurrent(self) -> None:
        """The next voucher twice at once: at most one copy may be served."""
        payload = self._next()
        header = self._header(payload)
        served: list[bool] = []

        def one() -> None:
            with self.client.get(
                PATH,
                name=self.name("CONCURRENT voucher"),
                catch_response=True,
                headers=self.headers({"PAYMENT-SIGNATURE": header}),
            ) as resp:
                served.append(upstream_json(resp) is not None)
                if resp.status_code >= 500:
                    resp.failure(f"server error {resp.status_code}")
                else:
                    resp.success()

        self.tally.attempts["voucher_concurrent"] += 1
        gevent.joinall([gevent.spawn(one), gevent.spawn(one)])
        if sum(served) > 1:
            self.breach(None, "voucher_concurrent", "two copies of one voucher reached the origin")
        if sum(served) == 1:
            self.charged = int(payload["voucher"]["maxClaimableAmount"])
            if payload["type"] == "deposit":
                self.balance += int(payload["deposit"]["amount"])
            self.tally.paid["x402-batch"] += 1
