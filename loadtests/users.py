"""The locust users: honest clients, bots and attackers, each checking that
popgate gave it exactly what the policy says it should.

Outcomes a user does not expect are ``response.failure(...)``; an attack that
succeeds, or a fee charged other than once, is also a *breach*
(``SECURITY ...`` failure, counted in :class:`loadtests.tally.Tally`) and fails
the run whatever the thresholds say (``loadtests/gate.py``).

Routes (``loadtests/flood-policy.toml``): ``/api/**`` challenges unverified
clients (puzzle, hashcash, x402, credits) and is free for humans, accounts and
verified agents; ``/paid/**`` costs ``POPGATE_LT_PRICE`` per request for all
but humans and accounts; ``/admin/**`` is denied.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, between, task
from locust.clients import ResponseContextManager

from loadtests.settings import Settings
from loadtests.tally import Tally, tally_of
from popgate.gateway import client as popclient

SETTINGS = Settings.from_env()
CHALLENGE = "application/problem+json"
BROWSER_UA = (
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"
)
FLOOD_UAS = (
    BROWSER_UA,
    "python-requests/2.32",
    "curl/8.5.0",
    "GPTBot/1.2",
    "Go-http-client/1.1",
    "Scrapy/2.11 (+https://scrapy.org)",
    "",
)
API_PATHS = ("/api/items", "/api/items/{n}", "/api/search?q={n}", "/api/users/{n}/posts")


def api_path() -> str:
    return random.choice(API_PATHS).format(n=random.randint(1, 10_000))


def upstream_json(resp: Any) -> dict[str, Any] | None:
    """The demo origin's echo (``{"method", "path", "pop": {...}}``), or None."""
    if resp.status_code != 200:
        return None
    try:
        body = resp.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) and "pop" in body else None


def is_challenge(resp: Any) -> bool:
    return resp.status_code == 402 and resp.headers.get("Content-Type", "").startswith(CHALLENGE)


def is_shed(resp: Any) -> bool:
    """popgate's admission control refused the request: 503 ``overloaded`` with Retry-After."""
    if resp.status_code != 503 or not resp.headers.get("Retry-After"):
        return False
    try:
        return bool(resp.json().get("reason") == "overloaded")
    except ValueError:
        return False


class PopUser(HttpUser):
    """Common helpers; not run itself."""

    abstract = True
    host = SETTINGS.host or None
    net_octet = 9  # second octet of this class's client networks (X-Forwarded-For)

    def on_start(self) -> None:
        self.tally: Tally = tally_of(self.environment)
        self.settings = SETTINGS
        self.ip = f"10.{self.net_octet}.{random.randint(0, 255)}.{random.randint(1, 254)}"

    def headers(self, extra: dict[str, str] | None = None, ip: str | None = None) -> dict[str, str]:
        h = {"User-Agent": BROWSER_UA, "Accept": "application/json"}
        if self.settings.xff:
            h["X-Forwarded-For"] = ip or self.ip
        if extra:
            h.update(extra)
        return h

    def name(self, label: str) -> str:
        return f"{type(self).__name__} {label}"

    def breach(self, resp: ResponseContextManager | None, kind: str, detail: str) -> None:
        """An attack got through or a fee was wrong: fails the run."""
        self.tally.breach(kind, detail)
        if resp is not None:
            resp.failure(f"SECURITY {kind}: {detail}"[:500])

    def expect_upstream(
        self, resp: ResponseContextManager, klass: str | None = None, charged: int | None = None
    ) -> dict[str, Any] | None:
        """The request reached the origin as ``klass``, charged ``charged`` (None: any)."""
        body = upstream_json(resp)
        if body is None:
            resp.failure(f"expected the origin's answer, got {resp.status_code}: {resp.text[:200]}")
            return None
        pop = body["pop"]
        if klass is not None and pop.get("PoP-Class") != klass:
            resp.failure(f"origin saw class {pop.get('PoP-Class')!r}, expected {klass!r}")
            return None
        if charged is not None and int(pop.get("PoP-Charged", "0") or 0) != charged:
            self.breach(
                resp, "charge_mismatch", f"PoP-Charged {pop.get('PoP-Charged')!r}, expected {charged}"
            )
            return None
        resp.success()
        return body


class FloodBot(PopUser):
    """No evidence at all, hammering routes: only ever 402, 429 or 403.

    Flood bots share a handful of client networks (a botnet's /24s), so their
    networks' puzzle difficulty climbs."""

    weight = 10
    wait_time = between(0.0, 0.02)
    net_octet = 1

    def on_start(self) -> None:
        super().on_start()
        self.ip = f"10.1.{random.randint(0, 3)}.{random.randint(1, 254)}"

    def _hit(self, method: str, path: str, label: str, allowed: tuple[int, ...], **kw: Any) -> None:
        ua = random.choice(FLOOD_UAS)
        with self.client.request(
            method,
            path,
            name=self.name(label),
            catch_response=True,
            headers=self.headers({"User-Agent": ua}),
            **kw,
        ) as resp:
            if upstream_json(resp) is not None or resp.status_code == 200:
                self.breach(resp, "flood_reached_origin", f"{method} {path} -> {resp.status_code}")
            elif is_shed(resp):
                resp.success()  # an anonymous request shed under overload: what the flood should get
                self.tally.notes["flood_shed"] += 1
            elif resp.status_code not in allowed:
                resp.failure(f"{method} {path}: status {resp.status_code}, expected one of {allowed}")
            elif resp.status_code == 402 and not (is_challenge(resp) and resp.json().get("ways_out")):
                resp.failure("402 without a problem+json listing ways_out")
            else:
                resp.success()

    @task(6)
    def api(self) -> None:
        self._hit("GET", api_path(), "GET /api/*", (402, 429))

    @task(2)
    def paid(self) -> None:
        self._hit("GET", f"/paid/report/{random.randint(1, 99)}", "GET /paid/*", (402, 429))

    @task(1)
    def write(self) -> None:
        self._hit("POST", "/api/items", "POST /api/items", (402, 429), data=os.urandom(64))

    @task(1)
    def admin(self) -> None:
        self._hit("GET", "/admin/config", "GET /admin/*", (403, 429))


class PuzzleBot(PopUser):
    """Does the work: solves the 402's puzzle with the client helper, mostly
    buying a budgeted session (``POST /.well-known/popgate/puzzle``), sometimes
    presenting the solution with the request itself. Its cost per request that
    got through (hashes, solve time) is in the run's summary."""

    weight = 3
    wait_time = between(0.05, 0.2)
    net_octet = 2

    def on_start(self) -> None:
        super().on_start()
        self.token: str | None = None

    def _solve(self, resp: ResponseContextManager) -> popclient.Solved | None:
        try:
            solved = popclient.respond(
                resp.json(), prefer=("puzzle", "hashcash"), max_bits=self.settings.max_bits
            )
        except popclient.CannotSolve as exc:
            self.tally.notes["puzzle_priced_out"] += 1
            resp.success()  # the policy priced this client out: working as intended
            self.environment.events.request.fire(
                request_type="WORK",
                name=self.name("priced out"),
                response_time=0,
                response_length=0,
                exception=None,
                context={},
            )
            del exc
            return None
        resp.success()
        w = self.tally.work
        w["solved"] += 1
        w["hashes"] += solved.hashes
        w["seconds"] += solved.seconds
        way = next((x for x in popclient.ways_out(resp.json()) if x["kind"] == solved.way), {})
        self.tally.bits[int(way.get("bits", 0))] += 1
        gevent.sleep(0)
        return solved

    @task
    def browse(self) -> None:
        path = api_path()
        auth = {"Authorization": f"PoP {self.token}"} if self.token else {}
        with self.client.get(
            path, name=self.name("GET /api/*"), catch_response=True, headers=self.headers(auth)
        ) as resp:
            if upstream_json(resp) is not None:
                self.tally.work["requests_through"] += 1
                self.expect_upstream(resp)
                return
            if is_shed(resp):  # no credential yet: anonymous, shed under overload
                resp.success()
                self.tally.notes["puzzle_ask_shed"] += 1
                return
            if not is_challenge(resp):
                resp.failure(f"status {resp.status_code}: {resp.text[:200]}")
                return
            self.token = None  # budget spent or session gone: work again
            solved = self._solve(resp)
        if solved is None:
            return
        if solved.way == "puzzle" and random.random() < 0.8:
            self._buy_session(solved)
        else:
            with self.client.get(
                path,
                name=self.name("GET /api/* +work"),
                catch_response=True,
                headers=self.headers(solved.headers),
            ) as resp:
                if self.expect_upstream(resp) is not None:
                    self.tally.work["requests_through"] += 1

    def _buy_session(self, solved: popclient.Solved) -> None:
        solution = next(iter(solved.headers.values()))
        with self.client.post(
            "/.well-known/popgate/puzzle",
            name=self.name("POST puzzle"),
            json={"solution": solution},
            catch_response=True,
            headers=self.headers(),
        ) as resp:
            if resp.status_code == 200 and resp.json().get("token"):
                self.token = resp.json()["token"]
                resp.success()
            else:
                resp.failure(f"puzzle session refused: {resp.status_code} {resp.text[:200]}")


class Human(PopUser):
    """A person with a popgate session (``Authorization: PoP``), as a World ID
    or sign-in exchange would have issued: browses free, never charged."""

    weight = 3
    wait_time = between(0.05, 0.3)
    net_octet = 3

    def on_start(self) -> None:
        super().on_start()
        self.token = random.choice(self.settings.session_tokens)

    @task(4)
    def api(self) -> None:
        with self.client.get(
            api_path(),
            name=self.name("GET /api/*"),
            catch_response=True,
            headers=self.headers({"Authorization": f"PoP {self.token}"}),
        ) as resp:
            self.expect_upstream(resp, "human", 0)

    @task(1)
    def paid(self) -> None:
        with self.client.get(
            "/paid/report",
            name=self.name("GET /paid/*"),
            catch_response=True,
            headers=self.headers({"Authorization": f"PoP {self.token}"}),
        ) as resp:
            self.expect_upstream(resp, "human", 0)


class PayingAgent(PopUser):
    """Pays per request on ``/paid/*``: with prepaid credits
    (``Authorization: Bearer <api key>``) and/or x402 (the official SDK signs an
    EIP-3009 authorization with a test key). Each request must get through and
    be charged exactly the price, once (the gate also reconciles the credit
    balances and the facilitator's settlements)."""

    weight = 2
    wait_time = between(0.05, 0.2)
    net_octet = 4

    def on_start(self) -> None:
        super().on_start()
        s = self.settings
        self.rails = [r for r, ok in (("credits", bool(s.api_keys)), ("x402", bool(s.x402_key))) if ok]
        i = random.randrange(len(s.api_keys)) if s.api_keys else -1
        self.api_key = s.api_keys[i] if i >= 0 else ""
        self.account = s.credit_accounts[i] if 0 <= i < len(s.credit_accounts) else ""
        self.x402 = None
        self.required = None

    @task
    def pay(self) -> None:
        rail = random.choice(self.rails)
        self._credits() if rail == "credits" else self._x402()

    def _credits(self) -> None:
        path = f"/paid/report/{random.randint(1, 99)}"
        self.tally.uncertain["credits"] += 1  # until an answer comes back (the run may stop mid-request)
        with self.client.get(
            path,
            name=self.name("GET /paid/* credits"),
            catch_response=True,
            headers=self.headers({"Authorization": f"Bearer {self.api_key}"}),
        ) as resp:
            if resp.status_code:
                self.tally.uncertain["credits"] -= 1
            if self.expect_upstream(resp, None, self.settings.price) is not None:
                self.tally.paid["credits"] += 1
                self.tally.paid_accounts[self.account] += 1

    def _sdk(self) -> Any:
        if self.x402 is None:
            from eth_account import Account
            from x402 import x402ClientSync
            from x402.mechanisms.evm.exact.register import register_exact_evm_client

            self.x402 = x402ClientSync()
            register_exact_evm_client(self.x402, Account.from_key(self.settings.x402_key))
        return self.x402

    def _requirements(self, path: str) -> Any:
        """Ask once, as an x402 client does: the 402's PAYMENT-REQUIRED header. The ask
        carries no credential, so under overload popgate may shed it (503 overloaded):
        then wait (Retry-After, at most a second here) and ask again, three times at most."""
        for _ in range(3):
            got = self._ask(path)
            if got != "shed":
                return got
            gevent.sleep(1.0)
        return None

    def _ask(self, path: str) -> Any:
        from x402.http.utils import decode_payment_required_header

        with self.client.get(
            path, name=self.name("GET /paid/* (402)"), catch_response=True, headers=self.headers()
        ) as resp:
            header = resp.headers.get("PAYMENT-REQUIRED")
            if is_shed(resp):
                resp.success()
                self.tally.notes["payer_ask_shed"] += 1
                return "shed"
            if resp.status_code != 402 or not header:
                resp.failure(f"expected 402 with PAYMENT-REQUIRED, got {resp.status_code}")
                return None
            resp.success()
            return decode_payment_required_header(header)

    def _x402(self) -> None:
        from x402.http.utils import encode_payment_signature_header

        path = f"/paid/report/{random.randint(1, 99)}"
        required = self._requirements(path)  # per request: the resource URL is in the requirement
        if required is None:
            return
        header = encode_payment_signature_header(self._sdk().create_payment_payload(required))
        self.tally.uncertain["x402"] += 1
        with self.client.get(
            path,
            name=self.name("GET /paid/* x402"),
            catch_response=True,
            headers=self.headers({"PAYMENT-SIGNATURE": header}),
        ) as resp:
            if resp.status_code:
                self.tally.uncertain["x402"] -= 1
            if self.expect_upstream(resp, None, self.settings.price) is not None:
                if "PAYMENT-RESPONSE" not in resp.headers:
                    resp.failure("paid without a PAYMENT-RESPONSE header")
                self.tally.paid["x402"] += 1


class WebBotAuthSigner:
    """Signs requests as a Web Bot Auth agent (RFC 9421, Ed25519, ``@authority``)."""

    def __init__(self, jwk_file: str, agent: str = "") -> None:
        from cryptography.hazmat.primitives.asymmetric import ed25519

        from popgate.verifiers.httpsig import jwk_thumbprint

        jwk = json.loads(Path(jwk_file).read_text(encoding="utf-8"))
        d = base64.urlsafe_b64decode(jwk["d"] + "=" * (-len(jwk["d"]) % 4))
        self.key = ed25519.Ed25519PrivateKey.from_private_bytes(d)
        self.keyid = jwk_thumbprint({k: jwk[k] for k in ("kty", "crv", "x")})
        self.agent = agent

    def sign(self, url: str, headers: dict[str, str]) -> dict[str, str]:
        from popgate.verifiers.httpsig import RequestView, signature_base
        from popgate.verifiers.structured_fields import InnerList, Item, serialize_inner_list

        h = dict(headers)
        comps = ["@authority"]
        if self.agent:
            h["Signature-Agent"] = f'"{self.agent}"'
            comps.append("signature-agent")
        now = int(time.time())
        il = InnerList(
            [Item(c, {}) for c in comps],
            {
                "created": now,
                "expires": now + 60,
                "keyid": self.keyid,
                "alg": "ed25519",
                "nonce": base64.b64encode(os.urandom(32)).decode(),
                "tag": "web-bot-auth",
            },
        )
        sig = self.key.sign(signature_base(RequestView.build("GET", url, h), il))
        h["Signature-Input"] = f"sig1={serialize_inner_list(il)}"
        h["Signature"] = f"sig1=:{base64.b64encode(sig).decode()}:"
        return h


class VerifiedAgent(PopUser):
    """A declared agent signing every request with Web Bot Auth: let through
    as ``verified-agent`` on ``/api/*``."""

    weight = 2
    wait_time = between(0.05, 0.2)
    net_octet = 5

    def on_start(self) -> None:
        super().on_start()
        self.signer = WebBotAuthSigner(self.settings.wba_jwk, self.settings.wba_agent)

    @task
    def api(self) -> None:
        path = api_path()
        headers = self.signer.sign(self.host.rstrip("/") + path, self.headers())
        with self.client.get(
            path, name=self.name("GET /api/*"), catch_response=True, headers=headers
        ) as resp:
            self.expect_upstream(resp, "verified-agent", 0)


class ZkLoginWallet:
    """An OIDC account with an ephemeral Ed25519 key, as a zkLogin wallet:
    a JWT from the test IdP whose ``nonce`` commits to the key, then
    RFC 9421 signatures over ``@method`` and ``@target-uri``."""

    def __init__(self, s: Settings, sub: str) -> None:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519

        self.s, self.sub = s, sub
        self.idp = serialization.load_pem_private_key(Path(s.idp_key).read_bytes(), None)
        self.key = ed25519.Ed25519PrivateKey.generate()
        self.ext = b"\x00" + self.key.public_key().public_bytes_raw()
        self.max_epoch = int(time.time()) + 3600
        self.randomness = int.from_bytes(os.urandom(16), "big")
        self.token = self.keyid = ""

    def exchange_body(self) -> dict[str, Any]:
        import jwt

        from popgate.verifiers.zklogin import compute_nonce

        now = int(time.time())
        claims = {
            "iss": self.s.idp_issuer,
            "aud": self.s.idp_audience,
            "sub": self.sub,
            "iat": now,
            "exp": now + 600,
            "nonce": compute_nonce(self.ext, self.max_epoch, self.randomness),
        }
        return {
            "id_token": jwt.encode(claims, self.idp, algorithm="RS256", headers={"kid": self.s.idp_kid}),
            "ext_eph_pk": base64.b64encode(self.ext).decode(),
            "max_epoch": self.max_epoch,
            "randomness": str(self.randomness),
        }

    def sign(self, method: str, url: str, headers: dict[str, str]) -> dict[str, str]:
        from popgate.verifiers.httpsig import RequestView, signature_base
        from popgate.verifiers.structured_fields import InnerList, Item, serialize_inner_list

        h = {**headers, "Authorization": f"PoP {self.token}"}
        now = int(time.time())
        il = InnerList(
            [Item("@method", {}), Item("@target-uri", {})],
            {"created": now, "expires": now + 60, "keyid": self.keyid, "alg": "ed25519"},
        )
        sig = self.key.sign(signature_base(RequestView.build(method, url, h), il))
        h["Signature-Input"] = f"sig1={serialize_inner_list(il)}"
        h["Signature"] = f"sig1=:{base64.b64encode(sig).decode()}:"
        return h


ZKLOGIN = "/.well-known/popgate/zklogin"


class AccountUser(PopUser):
    """Signs in once (zkLogin-style exchange), then browses with RFC 9421-signed
    requests: ``account``, free."""

    weight = 2
    wait_time = between(0.05, 0.3)
    net_octet = 6

    def on_start(self) -> None:
        super().on_start()
        self.wallet = ZkLoginWallet(self.settings, f"flood-user-{random.getrandbits(48):x}")
        self.login()

    def login(self) -> None:
        with self.client.post(
            ZKLOGIN,
            name=self.name("POST zklogin"),
            json=self.wallet.exchange_body(),
            catch_response=True,
            headers=self.headers(),
        ) as resp:
            if resp.status_code == 200 and resp.json().get("token"):
                data = resp.json()
                self.wallet.token, self.wallet.keyid = data["token"], data["keyid"]
                resp.success()
            else:
                resp.failure(f"zkLogin exchange refused: {resp.status_code} {resp.text[:200]}")

    @task
    def api(self) -> None:
        if not self.wallet.token:
            return self.login()
        path = api_path()
        headers = self.wallet.sign("GET", self.host.rstrip("/") + path, self.headers())
        with self.client.get(
            path, name=self.name("GET /api/*"), catch_response=True, headers=headers
        ) as resp:
            self.expect_upstream(resp, "account", 0)


class WorldIdHuman(PopUser):
    """Exchanges a World ID proof (the first exchange body in ``POPGATE_LT_WORLDID_PROOF``)
    for a session once, then browses as ``human``. Enabled only with a proof
    the gateway accepts (one proof = one nullifier: one user of this class)."""

    weight = 1
    fixed_count = 1
    wait_time = between(0.1, 0.3)
    net_octet = 7
    spent: dict[str, Any] | None = None  # the body once exchanged: the Replayer replays it

    def on_start(self) -> None:
        super().on_start()
        self.token = ""
        body = self.settings.worldid_bodies()[0]
        with self.client.post(
            "/.well-known/popgate/worldid",
            name=self.name("POST worldid"),
            json=body,
            catch_response=True,
            headers=self.headers(),
        ) as resp:
            if resp.status_code == 200 and resp.json().get("token"):
                self.token = resp.json()["token"]
                WorldIdHuman.spent = body
                resp.success()
            else:
                resp.failure(f"World ID exchange refused: {resp.status_code} {resp.text[:200]}")

    @task
    def api(self) -> None:
        if not self.token:
            return
        with self.client.get(
            api_path(),
            name=self.name("GET /api/*"),
            catch_response=True,
            headers=self.headers({"Authorization": f"PoP {self.token}"}),
        ) as resp:
            self.expect_upstream(resp, "human", 0)
