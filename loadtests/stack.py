"""Bring up what a flood run needs, on loopback only: the demo origin, a local
x402 facilitator, popgate (from ``flood.toml`` + ``flood-policy.toml``), the
test keys and credentials the locust users present.

:func:`start_stack` is used by ``run_flood.py`` and by the CI smoke test
(``tests/loadtests/test_locust_smoke.py``). Every process is started here and
ended here, by its pid.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import Any

from coincurve import PrivateKey
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from popgate.gateway.payments.claim_signer import ClaimSigner  # noqa: E402
from tests.support.servers import free_port, wait_port  # noqa: E402

HERE = Path(__file__).resolve().parent
PY = sys.executable
X402_TEST_KEY = "0x" + "44" * 32  # a public test key: never fund it
IDP_ISSUER, IDP_AUDIENCE, IDP_KID = "https://idp.flood.popgate.test", "popgate-flood", "flood-1"
PRICE_ATOMIC = 1000  # flood-policy.toml: "0.001" USD
DELEGATION_QUOTA = 100  # flood.toml [delegation] daily_quota: one person, all their agents


@dataclass
class Stack:
    out: Path
    base_url: str
    admin_url: str
    upstream_url: str
    facilitator_url: str
    gateway: subprocess.Popen[bytes]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    admin_token: str = ""
    store_url: str = ""

    def admin(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the admin API (credits) with the run's admin token."""
        req = urllib.request.Request(
            self.admin_url + path,
            method="POST" if body is not None else "GET",
            data=json.dumps(body).encode() if body is not None else None,
            headers={"Authorization": f"Bearer {self.admin_token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read())

    def metrics(self) -> str:
        with urllib.request.urlopen(self.admin_url + "/metrics", timeout=10) as r:
            return r.read().decode()

    def close(self) -> None:
        for p in [self.gateway, *self.procs]:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in [self.gateway, *self.procs]:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                print(f"flood: {p.args[:4]} did not stop in 15 s: killing its process group", file=sys.stderr)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)  # the group is its own (start_new_session)
                p.wait(5)


def _secret(path: Path) -> str:
    value = os.urandom(32).hex()
    path.write_text(value)
    path.chmod(0o600)
    return value


def write_keys(keys: Path) -> dict[str, str]:
    """Test keys for one run: MAC keys, the admin token, a test IdP, the agent's JWKS."""
    keys.mkdir(parents=True, exist_ok=True)
    out = {name: _secret(keys / f"{name}.key") for name in ("session", "puzzle")}
    out["admin"] = _secret(keys / "admin.token")
    idp = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (keys / "idp.pem").write_bytes(
        idp.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    import jwt

    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(idp.public_key()))
    (keys / "idp.jwks.json").write_text(
        json.dumps({"keys": [{**jwk, "kid": IDP_KID, "alg": "RS256", "use": "sig"}]})
    )
    agent = json.loads((ROOT / "tests/fixtures/webbotauth/vectors.json").read_text())["keys"]["agent"]
    (keys / "agent.jwk.json").write_text(json.dumps(agent))
    public = {k: agent[k] for k in ("kty", "crv", "x")}
    (keys / "agent.jwks.json").write_text(json.dumps({"keys": [public]}))
    issuer = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # a test Privacy Pass issuer
    (keys / "pp-issuer.pem").write_bytes(
        issuer.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    spki = issuer.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    out["pp_token_key"] = base64.urlsafe_b64encode(spki).decode()
    # the receiver authorizer that signs claim batches (VoucherAgent's channels name its address)
    authorizer = PrivateKey().secret.hex()
    (keys / "receiver-authorizer.key").write_text(authorizer)
    (keys / "receiver-authorizer.key").chmod(0o600)
    out["receiver_authorizer"] = ClaimSigner(authorizer.encode()).address
    return out


WORLDID_FIXTURES = ROOT / "tests/fixtures/groth16/worldid_v3_local.json"
WORLDID_VK = ROOT / "tests/fixtures/groth16/semaphore_v3_local_depth20.vk.json"


def write_worldid_proofs(keys: Path) -> dict[str, str]:
    """Two exchange bodies (two nullifiers) for action ``verify-human`` from the committed
    Semaphore fixtures: the first is the WorldIdHuman's, the last the Sybil's."""
    cases = [c for c in json.loads(WORLDID_FIXTURES.read_text())["cases"] if c["action"] == "verify-human"]
    bodies = [{"result": c["idkit2_result"], "signal": c["signal"]} for c in cases[:2]]
    (keys / "worldid.json").write_text(json.dumps(bodies))
    return {
        "worldid_app_id": cases[0]["app_id"],
        "worldid_vk": str(WORLDID_VK),
        "worldid_root": cases[0]["idkit2_result"]["merkle_root"],
    }


def _start(args: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as fh:
        # its own process group: close() can end its workers too if it hangs
        proc = subprocess.Popen(args, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    wait_port(port, timeout=30, proc=proc)
    return proc


def start_redis(out: Path) -> tuple[str, subprocess.Popen[bytes]]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server not found (apt-get install redis-server)")
    port = free_port()
    (out / "redis").mkdir(exist_ok=True)
    proc = _start(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(out / "redis"),
            "--protected-mode",
            "yes",
        ],
        port,
        out / "redis.log",
    )
    return f"redis://127.0.0.1:{port}/0", proc


def start_stack(
    out: Path,
    *,
    store: str = "sqlite",
    workers: int = 1,
    api_keys: int = 4,
    sessions: int = 16,
    credit_usd: str = "1000.00",
    extra_config: str = "",
) -> Stack:
    """Start origin, facilitator and popgate; issue credentials; return the Stack.

    ``store``: ``sqlite`` (embedded, the default), ``redis`` (a throwaway
    redis-server) or ``memory`` (one worker only). ``extra_config`` is appended to
    the gateway's config (e.g. an ``[overload]`` table). Raises RuntimeError when a
    process does not come up (its log is in ``out``).
    """
    out.mkdir(parents=True, exist_ok=True)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        secrets = write_keys(out / "keys")
        up, fac, port, admin = free_port(), free_port(), free_port(), free_port()
        procs.append(
            _start(
                [PY, "-m", "popgate.gateway", "demo-upstream", "--listen", f"127.0.0.1:{up}"],
                up,
                out / "upstream.log",
            )
        )
        procs.append(_start([PY, "-m", "loadtests.facilitator", str(fac)], fac, out / "facilitator.log"))
        if store == "redis":
            store_url, redis = start_redis(out)
            procs.append(redis)
        elif store == "memory":
            store_url = "memory://"
        else:
            (out / "store.db").unlink(missing_ok=True)
            store_url = f"sqlite:///{out / 'store.db'}"
        config = Template((HERE / "flood.toml").read_text()).substitute(
            **write_worldid_proofs(out / "keys"),
            port=port,
            admin_port=admin,
            upstream=f"http://127.0.0.1:{up}",
            store=store_url,
            keys=out / "keys",
            policy=HERE / "flood-policy.toml",
            pp_token_key=secrets["pp_token_key"],
            receiver_authorizer=secrets["receiver_authorizer"],
            delegation_quota=DELEGATION_QUOTA,
            facilitator=f"http://127.0.0.1:{fac}",
        )
        (out / "popgate.toml").write_text(config + "\n" + extra_config)
        gw = _start(
            [
                PY,
                "-m",
                "popgate.gateway",
                "run",
                "--config",
                str(out / "popgate.toml"),
                "--workers",
                str(workers),
                "--log-level",
                "WARNING",
            ],
            port,
            out / "popgate.log",
        )
        procs.append(gw)
        wait_port(admin, timeout=30, proc=gw)
        procs.remove(gw)
    except BaseException:
        for p in procs:
            p.terminate()
            p.wait(10)
        raise
    stack = Stack(
        out,
        f"http://127.0.0.1:{port}",
        f"http://127.0.0.1:{admin}",
        f"http://127.0.0.1:{up}",
        f"http://127.0.0.1:{fac}",
        gw,
        procs,
        admin_token=secrets["admin"],
        store_url=store_url,
    )
    try:
        stack.env = credentials(stack, secrets, api_keys, sessions, credit_usd)
    except BaseException:
        stack.close()
        raise
    return stack


def credentials(
    stack: Stack, secrets: dict[str, str], api_keys: int, sessions: int, credit_usd: str
) -> dict[str, str]:
    """The environment the locust users read (see loadtests/settings.py)."""
    from popgate.verifiers.session import SessionCodec

    codec = SessionCodec({"flood": secrets["session"].encode()}, "flood")
    now = time.time()
    tokens = [
        codec.issue(klass="human", subject=f"flood-human-{i}", now=now, ttl=3600) for i in range(sessions)
    ]
    keys, accounts = [], []
    for _ in range(api_keys):
        k = stack.admin("/admin/credits/keys", {"amount_usd": credit_usd})
        keys.append(k["api_key"])
        accounts.append(k["account"])
    k = stack.out / "keys"
    return {
        "POPGATE_LT_HOST": stack.base_url,
        "POPGATE_LT_SESSION_TOKENS": ",".join(tokens),
        "POPGATE_LT_API_KEYS": ",".join(keys),
        "POPGATE_LT_CREDIT_ACCOUNTS": ",".join(accounts),
        "POPGATE_LT_ADMIN_URL": stack.admin_url,
        "POPGATE_LT_ADMIN_TOKEN": secrets["admin"],
        "POPGATE_LT_X402_KEY": X402_TEST_KEY,
        "POPGATE_LT_WBA_JWK": str(k / "agent.jwk.json"),
        "POPGATE_LT_IDP_KEY": str(k / "idp.pem"),
        "POPGATE_LT_IDP_ISSUER": IDP_ISSUER,
        "POPGATE_LT_IDP_AUDIENCE": IDP_AUDIENCE,
        "POPGATE_LT_IDP_KID": IDP_KID,
        "POPGATE_LT_WORLDID_PROOF": str(k / "worldid.json"),
        "POPGATE_LT_PP_ISSUER_KEY": str(k / "pp-issuer.pem"),
        "POPGATE_LT_DELEGATOR_SESSION": codec.issue(
            klass="human", subject="flood-delegator", now=now, ttl=3600, evidence="worldid"
        ),
        "POPGATE_LT_DELEGATION_QUOTA": str(DELEGATION_QUOTA),
        "POPGATE_LT_PRICE": str(PRICE_ATOMIC),
        "POPGATE_LT_XFF": "1",
        "POPGATE_LT_FORGE_KEY": os.urandom(32).hex(),
    }
