"""Logs: JSON lines parsed back, the access line's fields, and nothing secret in them
(real session tokens, a real World ID proof's nullifier, client addresses beyond the
configured truncation)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import subprocess
import sys
import urllib.error
import urllib.request

import pytest

from popgate.gateway.ops.config import ConfigError, load_config
from popgate.gateway.ops.logs import JsonFormatter
from tests.conftest import session_token, url_of
from tests.gateway.schemes.worldid_support import CASES, ENDPOINT, body, worldid_toml
from tests.support.servers import ROOT, free_port, wait_port, write_config

CLIENT = "203.0.113.77"
TRUST = 'trusted_proxies = ["127.0.0.0/8"]'


@pytest.fixture
def captured():
    """Every record of the run, formatted as [log] format = "json" formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


async def test_json_access_log_parsed_back_and_clean(upstream, gateway_factory, http, captured):
    """Every line is JSON with time, level, logger, event; one access line per request with
    its fields; no token, nullifier or full client address anywhere in the log."""
    log = '[log]\nformat = "json"\naccess = true\nipv4_prefix = 16\n'
    gw = await gateway_factory(upstream, extra=worldid_toml() + log, server_extra=TRUST)
    gw.gateway.access.stream = captured  # the access lines go beside the log records
    xff = {"X-Forwarded-For": CLIENT}
    async with http.post(url_of(gw, ENDPOINT), json=body(0), headers=xff) as r:
        assert r.status == 200
        human = (await r.json())["token"]
    other = session_token(gw, "human", subject="human:pseudonym")
    async with http.get(
        url_of(gw, "/api/x?token=sekrit-query"), headers={"Authorization": f"PoP {human}", **xff}
    ) as r:
        assert r.status == 200
    async with http.get(url_of(gw, "/api/y"), headers={"Cookie": f"popgate_session={other}", **xff}) as r:
        assert r.status == 200
    async with http.get(url_of(gw, "/api/z"), headers={"User-Agent": "Mozilla/5.0 (X11)", **xff}) as r:
        assert r.status == 402
        size = len(await r.read())
    gw.gateway.access.flush()
    text = captured.getvalue()
    lines = [json.loads(line) for line in text.splitlines()]
    assert all({"time", "level", "logger", "event"} <= set(line) for line in lines)
    access = [line for line in lines if line["logger"] == "popgate.access"]
    assert [a["path"] for a in access] == [ENDPOINT, "/api/x", "/api/y", "/api/z"]
    exchange, first, second, refused = access
    assert exchange["decision"] == "endpoint" and exchange["status"] == 200
    assert first["class"] == "human" and first["evidence"] == "worldid" and first["decision"] == "allow"
    assert first["subject"] and first["subject"].startswith("human:")
    assert second["subject"] == "human:pseudonym"
    assert refused["status"] == 402 and refused["decision"] == "challenge" and refused["class"] == "unknown"
    assert refused["bytes"] == size and refused["rule"] == "default"
    assert all(a["client"] == "203.0.0.0/16" and a["latency_ms"] >= 0 for a in access)
    assert all(a["method"] in ("GET", "POST") and a["level"] == "info" for a in access)
    nullifier = CASES[0]["idkit2_result"]["nullifier_hash"]
    for secret in (
        human,
        other,
        human.split(".")[-1],
        nullifier[2:],
        str(int(nullifier, 16)),
        CLIENT,
        "203.0.113",
        "sekrit-query",
    ):
        assert secret not in text, secret


async def test_text_access_line_and_off_by_default(upstream, gateway_factory, http):
    """Text lines carry the fields as key=value; without [log] access there is no access log;
    lines are batched and written within FLUSH_AFTER seconds."""
    quiet = await gateway_factory(upstream)
    assert quiet.gateway.access is None
    gw = await gateway_factory(upstream, server_extra="access_log = true")
    stream = io.StringIO()
    gw.gateway.access.stream = stream
    async with http.get(url_of(gw, "/b")) as r:
        assert r.status == 402
    await asyncio.sleep(gw.gateway.access.FLUSH_AFTER + 0.2)
    line = stream.getvalue()
    assert line.count("\n") == 1
    assert (
        " INFO popgate.access: access method=GET path=/b status=402 class=unknown decision=challenge" in line
    )
    assert "client=127.0.0.0/24" in line


@pytest.mark.parametrize(
    ("extra", "problem"),
    [
        ('[log]\nformat = "xml"\n', "log.format"),
        ('[log]\nlevel = "loud"\n', "log.level"),
        ("[log]\nipv4_prefix = 33\n", "log.ipv4_prefix"),
        ('[log]\naccess = "yes"\n', "log.access"),
        ("[log]\ncolour = true\n", "log.colour"),
    ],
)
def test_log_config_problems(tmp_path, extra, problem):
    with pytest.raises(ConfigError) as err:
        load_config(write_config(tmp_path, "http://127.0.0.1:1", extra=extra))
    assert any(p.startswith(problem) for p in err.value.problems), err.value.problems


def test_popgate_run_logs_json_lines(tmp_path):
    """`popgate run` with [log] format = "json": every stderr line is a JSON object,
    the access line included."""
    listen = free_port()
    log = '[log]\nformat = "json"\naccess = true\n'
    cfg = write_config(tmp_path, "http://127.0.0.1:1", listen=listen, extra=log, way_in=True)
    proc = subprocess.Popen(
        [sys.executable, "-m", "popgate.gateway", "run", "--config", str(cfg)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_port(listen, proc=proc)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{listen}/x", timeout=5)
        assert refused.value.code == 402
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
    assert any(line["logger"] == "popgate.server" for line in lines)
    assert any(line["logger"] == "popgate.access" and line["path"] == "/x" for line in lines)
