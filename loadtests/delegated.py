"""Users for Privacy Pass and delegations: a person with Privacy Pass tokens, and one
person's fleet of 20 delegated agents. Each also tries the matching cheats; a cheat that
works is a breach and fails the run.

PrivacyPassHuman: takes the ``PrivateToken`` challenge from the 402, gets it signed by the
run's test issuer (``POPGATE_LT_PP_ISSUER_KEY``: the load test plays issuer and client in
one step; the blind issuance itself is tested with privacypass-ts in the suite), redeems it
(through as ``human``, with a session it then browses with), then cheats: the same token
again, and a token for a challenge naming another origin.

DelegatedFleet: one person (``POPGATE_LT_DELEGATOR_SESSION``) delegates to 20 agent keys;
the agents take turns on ``/api/*`` and must come through as ``backed-agent`` with
``PoP-Backed-By`` = the person, until the person's daily quota
(``POPGATE_LT_DELEGATION_QUOTA``) is spent: after that, ``402 delegation_quota``. More
successes than the quota, across all keys, is a breach; so is a forged or expired
delegation getting through.
"""

from __future__ import annotations

import base64
import os
import random
import time
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path
from typing import Any

import gevent
from locust import between, task

from loadtests.users import PopUser, api_path, is_shed, upstream_json
from popgate.gateway.agent import Delegated, public_jwk

DELEGATE = "/.well-known/popgate/delegate"
FLEET = 20


class PrivacyPassHuman(PopUser):
    """A phone with Privacy Pass: one token per session, then browses as ``human``."""

    weight = 1
    wait_time = between(0.1, 0.4)
    net_octet = 11

    def on_start(self) -> None:
        super().on_start()
        from cryptography.hazmat.primitives import serialization

        # No cookie jar: the session cookie a redeemed token sets would carry the cheats
        # below through for the wrong reason (the session is sent explicitly instead).
        self.client.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))

        from popgate.verifiers.privatepass import load_token_key

        pem = Path(self.settings.pp_issuer_key).read_bytes()
        self.issuer: Any = serialization.load_pem_private_key(pem, None)
        spki = self.issuer.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.key_id = load_token_key(spki).key_id
        self.session, self.left = "", 0

    def token_for(self, challenge: bytes) -> str:
        """The test issuer's token for ``challenge`` (what issuance would hand the client)."""
        import hashlib

        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        token_input = b"\x00\x02" + os.urandom(32) + hashlib.sha256(challenge).digest() + self.key_id
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA384()), salt_length=48)
        sig = self.issuer.sign(token_input, pss, hashes.SHA384())
        return "PrivateToken token=" + base64.urlsafe_b64encode(token_input + sig).decode()

    def challenge(self, path: str) -> bytes | None:
        """The 402's Privacy Pass challenge. The ask is anonymous, so under overload popgate
        may shed it (503 overloaded): wait (Retry-After, a second here) and ask again, 3 times."""
        for _ in range(3):
            got = self._ask(path)
            if got != "shed":
                return got
            gevent.sleep(1.0)
        return None

    def _ask(self, path: str) -> bytes | str | None:
        with self.client.get(
            path, name=self.name("GET 402"), catch_response=True, headers=self.headers()
        ) as r:
            if is_shed(r):
                r.success()
                self.tally.notes["challenge_ask_shed"] += 1
                return "shed"
            ways = r.json().get("ways_out", []) if r.status_code == 402 else []
            way = next((w for w in ways if w.get("kind") == "privatepass"), None)
            if way is None:
                r.failure(f"no privatepass way out: {r.status_code} {r.text[:200]}")
                return None
            r.success()
            text = way["challenges"][0]["challenge"]
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    @task
    def browse(self) -> None:
        path = api_path()
        if self.left > 0:
            self.left -= 1
            h = self.headers({"Authorization": f"PoP {self.session}"})
            with self.client.get(
                path, name=self.name("GET /api/* (session)"), catch_response=True, headers=h
            ) as r:
                self.expect_upstream(r, "human", 0)
            return
        raw = self.challenge(path)
        if raw is None:
            return
        token = self.token_for(raw)
        h = self.headers({"Authorization": token})
        with self.client.get(path, name=self.name("GET /api/* (token)"), catch_response=True, headers=h) as r:
            if self.expect_upstream(r, "human", 0) is not None:
                self.session, self.left = r.headers.get("PoP-Session", ""), 5
        self.cheat("privatepass_reused_token", path, token)
        from popgate.verifiers.privatepass import parse_challenge

        c = parse_challenge(raw)
        other = type(c)(c.issuer_name, c.redemption_context, "other.example").encode()
        self.cheat("privatepass_other_origin", path, self.token_for(other))

    def cheat(self, kind: str, path: str, token: str) -> None:
        self.tally.attempts[kind] += 1
        h = self.headers({"Authorization": token})
        with self.client.get(path, name=self.name(kind), catch_response=True, headers=h) as r:
            if upstream_json(r) is not None:
                self.breach(r, kind, f"{path} -> {r.status_code}")
            else:
                r.success()


class DelegatedFleet(PopUser):
    """One person, 20 agent keys, one daily quota for all of them."""

    weight = 1
    fixed_count = 1  # the quota is the person's: one fleet user per person
    wait_time = between(0.02, 0.1)
    net_octet = 12

    def on_start(self) -> None:
        super().on_start()
        from cryptography.hazmat.primitives.asymmetric import ec, ed25519

        self.human = self.settings.delegator_session
        self.quota = self.settings.delegation_quota
        self.backed_by, self.through, self.agents = "", 0, []
        for i in range(FLEET):
            key = ed25519.Ed25519PrivateKey.generate() if i % 2 else ec.generate_private_key(ec.SECP256R1())
            agent = self.delegate(key, ttl=600)
            if agent is not None:
                self.agents.append(agent)
        self.expired = self.delegate(ed25519.Ed25519PrivateKey.generate(), ttl=1)
        self.born = time.monotonic()

    def delegate(self, key: Any, ttl: int) -> Delegated | None:
        h = self.headers({"Authorization": f"PoP {self.human}"})
        body = {"jwk": public_jwk(key), "scope": "/api/", "ttl": ttl}
        with self.client.post(
            DELEGATE, json=body, name=self.name("POST delegate"), catch_response=True, headers=h
        ) as r:
            if r.status_code != 201:
                r.failure(f"delegation refused: {r.status_code} {r.text[:200]}")
                return None
            r.success()
            data = r.json()
            self.backed_by = data["backed_by"]
            return Delegated(data["token"], data["id"], key)

    @task(10)
    def agent_request(self) -> None:
        if not self.agents:
            return
        agent, path = random.choice(self.agents), api_path()
        h = self.headers(agent.headers("GET", self.host.rstrip("/") + path))
        if self.quota and self.through >= self.quota:
            # the person's quota is spent: every further try, by any of the 20 keys, is the cheat
            self.tally.attempts["delegation_quota_exceeded"] += 1
        with self.client.get(path, name=self.name("GET /api/* (agent)"), catch_response=True, headers=h) as r:
            body = upstream_json(r)
            if body is not None:
                self.through += 1
                if self.quota and self.through > self.quota:
                    self.breach(
                        r, "delegation_quota_exceeded", f"{self.through} > {self.quota} over {FLEET} keys"
                    )
                elif body["pop"].get("PoP-Backed-By") != self.backed_by:
                    r.failure(f"PoP-Backed-By {body['pop'].get('PoP-Backed-By')!r}")
                else:
                    self.expect_upstream(r, "backed-agent", 0)
            elif r.status_code == 402 and r.json().get("reason") == "delegation_quota":
                self.tally.notes["delegation_quota_reached"] += 1
                r.success()
            else:
                r.failure(f"agent refused: {r.status_code} {r.text[:200]}")

    @task(1)
    def cheats(self) -> None:
        if not self.agents:
            return
        agent, path = random.choice(self.agents), api_path()
        url = self.host.rstrip("/") + path
        forged_token = agent.token[:-4] + ("AAAA" if not agent.token.endswith("AAAA") else "BBBB")
        self.attack(
            "delegation_forged", path, Delegated(forged_token, agent.keyid, agent.key).headers("GET", url)
        )
        if self.expired is not None and time.monotonic() - self.born > 2:
            self.attack("delegation_expired", path, self.expired.headers("GET", url))

    def attack(self, kind: str, path: str, headers: dict[str, str]) -> None:
        self.tally.attempts[kind] += 1
        with self.client.get(
            path, name=self.name(kind), catch_response=True, headers=self.headers(headers)
        ) as r:
            body = upstream_json(r)
            if body is not None and body["pop"].get("PoP-Class") == "backed-agent":
                self.breach(r, kind, f"{path} -> backed-agent")
            else:
                r.success()
