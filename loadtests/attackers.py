"""Attackers: every attempt that gets the origin's answer (or a second session
for one credential) is a breach and fails the run.

Replayer: replays what an honest client used once, or uses it from another
client network: a spent puzzle solution, a puzzle session from another /24,
a forged session token, a spent x402 payment, a spent zkLogin id_token, a
stolen zkLogin session without its key, a Web Bot Auth signature.
Sybil: one credential, many sessions, concurrently: one puzzle solution
posted N times, one id_token exchanged N times, one World ID nullifier.
"""

from __future__ import annotations

import random
import time
from http.cookiejar import DefaultCookiePolicy
from typing import Any, ClassVar

import gevent
from locust import between, task

from loadtests.users import (
    ZKLOGIN,
    PopUser,
    WebBotAuthSigner,
    WorldIdHuman,
    ZkLoginWallet,
    api_path,
    is_challenge,
    is_shed,
    upstream_json,
)
from popgate.gateway import client as popclient

PUZZLE = "/.well-known/popgate/puzzle"
WORLDID = "/.well-known/popgate/worldid"


class Attacker(PopUser):
    abstract = True
    wait_time = between(0.3, 1.0)

    def on_start(self) -> None:
        super().on_start()
        # Keep no cookies: a session cookie from a set-up step would let a
        # replay through for the wrong reason (and hide a real breach).
        self.client.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))

    def attempt(
        self, kind: str, method: str, path: str, headers: dict[str, str], label: str, **kw: Any
    ) -> Any:
        """One attack request: must NOT reach the origin."""
        self.tally.attempts[kind] += 1
        with self.client.request(
            method, path, name=self.name(label), catch_response=True, headers=headers, **kw
        ) as resp:
            if upstream_json(resp) is not None or resp.status_code in (200, 201, 204):
                self.breach(resp, kind, f"{method} {path} -> {resp.status_code}")
            elif resp.status_code >= 500:
                resp.failure(f"{kind}: server error {resp.status_code}")
            else:
                resp.success()
            return resp

    def honest(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        label: str,
        ok: tuple[int, ...] = (200,),
        **kw: Any,
    ) -> Any:
        """The legitimate first use the attack then replays; None when it failed."""
        with self.client.request(
            method, path, name=self.name(label), catch_response=True, headers=headers, **kw
        ) as resp:
            if resp.status_code in ok:
                resp.success()
                return resp
            resp.failure(f"set-up step {label}: {resp.status_code} {resp.text[:200]}")
            return None

    def challenge(self, path: str, ip: str | None = None) -> dict[str, Any] | None:
        with self.client.get(
            path, name=self.name("GET /api/* (402)"), catch_response=True, headers=self.headers(ip=ip)
        ) as resp:
            if is_shed(resp):  # an anonymous ask shed under overload: no attack this round
                resp.success()
                self.tally.notes["attacker_ask_shed"] += 1
                return None
            if not is_challenge(resp):
                resp.failure(f"expected a 402 challenge, got {resp.status_code}")
                return None
            resp.success()
            return resp.json()

    def solve(self, problem: dict[str, Any]) -> str | None:
        try:
            solved = popclient.respond(problem, prefer=("puzzle",), max_bits=self.settings.max_bits)
        except popclient.CannotSolve:
            return None
        gevent.sleep(0)
        return next(iter(solved.headers.values()))


class Replayer(Attacker):
    weight = 1
    net_octet = 8

    @task
    def puzzle_solution_replay(self) -> None:
        path = api_path()
        problem = self.challenge(path)
        solution = problem and self.solve(problem)
        if not solution:
            return
        if self.honest("GET", path, self.headers({"PoP-Puzzle": solution}), "GET /api/* +work") is None:
            return
        self.attempt(
            "puzzle_solution_replay",
            "GET",
            path,
            self.headers({"PoP-Puzzle": solution}),
            "REPLAY puzzle solution",
        )

    @task
    def puzzle_session_other_network(self) -> None:
        if not self.settings.xff:
            return
        problem = self.challenge(api_path())
        solution = problem and self.solve(problem)
        if not solution:
            return
        resp = self.honest("POST", PUZZLE, self.headers(), "POST puzzle", json={"solution": solution})
        if resp is None:
            return
        token = resp.json()["token"]
        elsewhere = f"10.{random.randint(100, 200)}.{random.randint(0, 255)}.7"
        self.attempt(
            "session_other_network",
            "GET",
            api_path(),
            self.headers({"Authorization": f"PoP {token}"}, ip=elsewhere),
            "REPLAY puzzle session from another network",
        )

    @task
    def forged_session(self) -> None:
        from popgate.verifiers.session import SessionCodec

        codec = SessionCodec({"flood": self.settings.forge_key.encode()}, "flood")
        token = codec.issue(klass="human", subject="forged", now=time.time(), ttl=600)
        self.attempt(
            "forged_session",
            "GET",
            api_path(),
            self.headers({"Authorization": f"PoP {token}"}),
            "FORGE session",
        )

    @task
    def x402_payment_replay(self) -> None:
        if not self.settings.x402_key:
            return
        from eth_account import Account
        from x402 import x402ClientSync
        from x402.http.utils import decode_payment_required_header, encode_payment_signature_header
        from x402.mechanisms.evm.exact.register import register_exact_evm_client

        path = f"/paid/replay/{random.randint(1, 99)}"
        with self.client.get(
            path, name=self.name("GET /paid/* (402)"), catch_response=True, headers=self.headers()
        ) as resp:
            header = resp.headers.get("PAYMENT-REQUIRED")
            if is_shed(resp):
                resp.success()
                self.tally.notes["attacker_ask_shed"] += 1
                return
            if resp.status_code != 402 or not header:
                resp.failure(f"expected 402 with PAYMENT-REQUIRED, got {resp.status_code}")
                return
            resp.success()
        sdk = x402ClientSync()
        register_exact_evm_client(sdk, Account.from_key(self.settings.x402_key))
        payment = encode_payment_signature_header(
            sdk.create_payment_payload(decode_payment_required_header(header))
        )
        if self.honest("GET", path, self.headers({"PAYMENT-SIGNATURE": payment}), "GET /paid/* x402") is None:
            return
        self.tally.paid["x402"] += 1
        self.attempt(
            "x402_payment_replay",
            "GET",
            path,
            self.headers({"PAYMENT-SIGNATURE": payment}),
            "REPLAY x402 payment",
        )

    @task
    def zklogin_replays(self) -> None:
        if not self.settings.idp_key:
            return
        wallet = ZkLoginWallet(self.settings, f"replayer-{random.getrandbits(32):x}")
        body = wallet.exchange_body()
        resp = self.honest("POST", ZKLOGIN, self.headers(), "POST zklogin", json=body)
        if resp is None:
            return
        token = resp.json()["token"]
        self.attempt(
            "zklogin_id_token_replay", "POST", ZKLOGIN, self.headers(), "REPLAY zklogin id_token", json=body
        )
        self.attempt(
            "zklogin_stolen_session",
            "GET",
            api_path(),
            self.headers({"Authorization": f"PoP {token}"}),
            "REPLAY zklogin session without its key",
        )

    @task
    def worldid_proof_replay(self) -> None:
        """The WorldIdHuman's proof, once it has bought its session: its nullifier is spent."""
        body = WorldIdHuman.spent
        if body is None:
            return
        self.attempt(
            "worldid_proof_replay", "POST", WORLDID, self.headers(), "REPLAY worldid proof", json=body
        )

    @task
    def webbotauth_signature_replay(self) -> None:
        if not self.settings.wba_jwk:
            return
        signer = WebBotAuthSigner(self.settings.wba_jwk, self.settings.wba_agent)
        path = api_path()
        headers = signer.sign(self.host.rstrip("/") + path, self.headers())
        if self.honest("GET", path, headers, "GET /api/* web-bot-auth") is None:
            return
        self.attempt("webbotauth_signature_replay", "GET", path, headers, "REPLAY web-bot-auth signature")


class Sybil(Attacker):
    weight = 1
    net_octet = 9
    copies = 5

    sessions: ClassVar[dict[str, int]] = {}  # credential → sessions it bought, over the whole run

    def many(
        self, kind: str, method: str, path: str, label: str, bodies: list[Any], credential: str | None = None
    ) -> None:
        """Send ``bodies`` concurrently; more than one session for the credential (in this
        attempt, or, when ``credential`` names it, over the whole run) is a breach."""
        self.tally.attempts[kind] += 1
        won: list[Any] = []

        def one(body: Any) -> None:
            with self.client.request(
                method, path, name=self.name(label), json=body, catch_response=True, headers=self.headers()
            ) as resp:
                if resp.status_code == 200:
                    won.append(resp.json().get("token"))
                elif resp.status_code >= 500:
                    resp.failure(f"{kind}: server error {resp.status_code}")
                    return
                resp.success()

        gevent.joinall([gevent.spawn(one, b) for b in bodies])
        total = len(won)
        if credential is not None:
            total = Sybil.sessions[credential] = Sybil.sessions.get(credential, 0) + len(won)
        if len(won) and total > 1:
            self.breach(None, kind, f"{total} sessions from one credential")
            self.environment.events.request.fire(
                request_type="SECURITY",
                name=self.name(label),
                response_time=0,
                response_length=0,
                exception=Exception(f"SECURITY {kind}: {total} sessions from one credential"),
                context={},
            )

    @task
    def one_puzzle_many_sessions(self) -> None:
        problem = self.challenge(api_path())
        solution = problem and self.solve(problem)
        if solution:
            self.many(
                "sybil_puzzle",
                "POST",
                PUZZLE,
                "SYBIL puzzle solution x5",
                [{"solution": solution}] * self.copies,
            )

    @task
    def one_id_token_many_sessions(self) -> None:
        if not self.settings.idp_key:
            return
        body = ZkLoginWallet(self.settings, f"sybil-{random.getrandbits(32):x}").exchange_body()
        self.many("sybil_zklogin", "POST", ZKLOGIN, "SYBIL zklogin id_token x5", [body] * self.copies)

    @task
    def one_nullifier_many_sessions(self) -> None:
        if not self.settings.worldid_proof:
            return
        body = self.settings.worldid_bodies()[-1]
        self.many(
            "sybil_worldid",
            "POST",
            WORLDID,
            "SYBIL worldid nullifier x5",
            [body] * self.copies,
            credential=f"worldid:{body['result'].get('nullifier_hash')}",
        )


__all__ = ["Replayer", "Sybil"]
