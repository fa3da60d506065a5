"""No secret or raw identifier in logs or metrics; MACs and secrets compared
in constant time at every known site; no key generated silently."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from popgate.gateway.ops.config import ConfigError, load_config
from tests.conftest import admin_url, session_token, url_of
from tests.gateway.http.test_bad_input import raw_exchange
from tests.support.paid_gateway import ChargePolicy

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "a" * 40
CLIENT_IP = "203.0.113.77"


async def test_logs_and_metrics_hold_no_secrets(upstream, gateway_factory, http, tmp_path, caplog):
    """Through the main flows (sessions good, bad and budgeted, API keys good
    and bad, admin calls, malformed requests, a dead upstream), at DEBUG,
    neither the log nor /metrics contains a session token, API key, admin
    token, key secret or the client's IP."""
    caplog.set_level(logging.DEBUG)
    (tmp_path / "admin").write_text(TOKEN)
    gw = await gateway_factory(
        upstream,
        server_extra='trusted_proxies = ["127.0.0.0/8"]',
        extra=f'[credits]\nadmin_token = {{ secret_file = "{tmp_path / "admin"}" }}\n',
    )
    gw.gateway.policy.policy = ChargePolicy(1000, prefix="/hello")
    xff = {"X-Forwarded-For": CLIENT_IP}
    token = session_token(gw, budget=2)
    async with http.post(
        admin_url(gw, "/admin/credits/keys"),
        json={"amount": 1500},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as r:
        api_key = (await r.json())["api_key"]
    for _ in range(3):
        async with http.get(url_of(gw, "/"), headers={"Authorization": f"PoP {token}", **xff}) as r:
            await r.read()
        async with http.get(url_of(gw, "/hello"), headers={"Authorization": f"Bearer {api_key}", **xff}) as r:
            await r.read()
    async with http.get(
        url_of(gw, "/hello"), headers={"Authorization": f"Bearer {api_key[:-4]}AAAA", **xff}
    ) as r:
        await r.read()
    async with http.get(url_of(gw, "/"), headers={"Authorization": f"PoP {token[:-4]}AAAA", **xff}) as r:
        await r.read()
    async with http.get(
        url_of(gw, "/.well-known/popgate/session"), headers={"Authorization": f"PoP {token}"}
    ) as r:
        await r.read()
    async with http.get(
        admin_url(gw, "/admin/credits/keys"), headers={"Authorization": f"Bearer {TOKEN}x"}
    ) as r:
        await r.read()
    port = gw.proxy.addresses[0][1]
    await raw_exchange(port, f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: PoP {token}\x01\r\n\r\n".encode())
    await raw_exchange(
        port, f"GET /{token} HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".encode()
    )
    async with http.get(admin_url(gw, "/metrics")) as r:
        metrics = await r.text()
    secrets = {
        "session token": token,
        "session token body": token.split(".")[2],
        "api key": api_key,
        "api key secret part": api_key.rsplit("_", 1)[-1],
        "admin token": TOKEN,
        "client ip": CLIENT_IP,
        "session key": (tmp_path / "k1").read_text(),
    }
    logs = caplog.text
    for what, value in secrets.items():
        assert value not in logs, f"{what} in the log"
        assert value not in metrics, f"{what} in /metrics"
    # label values are from small fixed sets: no free-form strings
    for line in metrics.splitlines():
        if not line.startswith("#"):
            for value in re.findall(r'="([^"]*)"', line):
                assert (len(value) < 40 and "/" not in value.strip("/")) or value.startswith("/"), line


# Every comparison of a MAC, digest of a secret or secret token, by site.
CONSTANT_TIME_SITES = [
    ("verifiers/session.py", "hmac.compare_digest(mac, expected)"),
    ("verifiers/puzzle.py", "hmac.compare_digest(expected.encode()"),
    ("verifiers/zklogin.py", "hmac.compare_digest(expected.encode(), (claims.nonce"),
    ("verifiers/httpsig.py", "hmac.compare_digest(member.value, want)"),
    ("gateway/payments/ledger.py", "hmac.compare_digest(digest, stored_hash"),
    ("gateway/payments/credits_api.py", "hmac.compare_digest(presented, token)"),
]


@pytest.mark.parametrize("path,needle", CONSTANT_TIME_SITES)
def test_secrets_are_compared_in_constant_time(path, needle):
    """Each known MAC/secret comparison site uses hmac.compare_digest."""
    assert needle in (ROOT / path).read_text(), f"{path}: constant-time comparison gone"


def test_no_plain_equality_on_macs_or_secrets():
    """No ``==``/``!=`` between a MAC, tag, digest or secret and another value
    anywhere in gateway/ or verifiers/ (lengths and public values excepted)."""
    pattern = re.compile(
        r"\b(mac|expected_mac|tag|secret|api_key|admin_token|stored_hash|"
        r"hmac_?digest)\b\s*(==|!=)|(==|!=)\s*(mac|expected_mac|secret|api_key|"
        r"admin_token|stored_hash)\b"
    )
    hits = []
    for py in [*ROOT.glob("gateway/**/*.py"), *ROOT.glob("verifiers/**/*.py")]:
        for n, line in enumerate(py.read_text().splitlines(), 1):
            if pattern.search(line) and "len(" not in line and "``" not in line:
                hits.append(f"{py.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, hits


def test_config_without_keys_fails_and_nothing_is_generated(tmp_path):
    """No [sessions] keys: start-up refuses with the key path, no key is invented."""
    path = tmp_path / "c.toml"
    path.write_text('[server]\nupstream = "http://127.0.0.1:1"\n[store]\nurl = "memory://"\n')
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert any(p.startswith("sessions.keys") for p in exc.value.problems)
    path.write_text('[server]\nupstream = "http://127.0.0.1:1"\n[sessions]\nkeys = []\n')
    with pytest.raises(ConfigError):
        load_config(path)
    (tmp_path / "short").write_text("x" * 10)
    path.write_text(
        '[server]\nupstream = "http://127.0.0.1:1"\n'
        f'[sessions]\nkeys = [{{kid = "a", secret_file = "{tmp_path / "short"}"}}]\n'
    )
    with pytest.raises(ConfigError, match="too short"):
        load_config(path)
