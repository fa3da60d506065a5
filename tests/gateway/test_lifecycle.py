"""The gateway as a process: graceful drain on SIGTERM, CLI errors, `popgate verify`."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

import aiohttp

from popgate.gateway.ops.config import load_config
from popgate.verifiers.session import SessionCodec
from tests.support.servers import ROOT, gateway_process, wait_port_async, write_config


async def test_sigterm_drains_in_flight_requests(upstream, tmp_path):
    """SIGTERM: the slow in-flight request still completes; new connections are refused; exit 0."""
    path = write_config(tmp_path, upstream, extra='[policy]\ndefault = "allow"\n')
    cfg = load_config(path)
    proc = gateway_process(path)
    try:
        await wait_port_async(cfg.listen.port)
        async with aiohttp.ClientSession() as http:
            slow = asyncio.create_task(http.get(f"http://127.0.0.1:{cfg.listen.port}/slow?delay=1.5"))
            await asyncio.sleep(0.4)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            refused = False
            try:
                await asyncio.open_connection("127.0.0.1", cfg.listen.port)
            except OSError:
                refused = True
            resp = await slow
            assert resp.status == 200
            assert (await resp.json())["slept"] == 1.5
            resp.release()
            assert refused, "new connections must be refused while draining"
        assert await asyncio.get_running_loop().run_in_executor(None, proc.wait, 10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_config_errors_exit_2_with_every_problem(tmp_path):
    """`popgate run` with a bad config prints all problems and exits 2 without starting."""
    bad = tmp_path / "bad.toml"
    bad.write_text('[server]\nlisten = "x"\nupstream = "nope"\n')
    out = subprocess.run(
        [sys.executable, "-m", "popgate.gateway", "run", "--config", str(bad)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    for where in ("server.listen", "server.upstream", "sessions.keys"):
        assert where in out.stderr


def verify(scheme: str, lines: list[str], *args: str) -> tuple[int, list[dict], str]:
    out = subprocess.run(
        [sys.executable, "-m", "popgate.gateway", "verify", scheme, *args],
        cwd=ROOT,
        input="\n".join(lines) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.returncode, [json.loads(x) for x in out.stdout.splitlines()], out.stderr


def test_verify_session_cli(tmp_path):
    """JSON Lines in, one verdict per line out, in order; malformed lines do not stop the run."""
    path = write_config(tmp_path, "http://127.0.0.1:1")
    cfg = load_config(path)
    codec = SessionCodec(cfg.sessions.keys, cfg.sessions.signing_kid)
    now = int(time.time())
    good = codec.issue(klass="human", subject="human:x", now=now, ttl=60)
    old_key = SessionCodec(cfg.sessions.keys, "k0").issue(klass="agent", subject="a", now=now, ttl=60)
    lines = [
        json.dumps({"token": good, "now": now}),
        json.dumps({"token": good, "now": now + 61}),
        json.dumps({"token": good[:-3] + "AAA", "now": now}),
        "this is not json",
        json.dumps({"token": old_key, "now": now}),
        json.dumps(["not", "an", "object"]),
        json.dumps({"now": now}),
    ]
    code, out, _ = verify("session", lines, "--config", str(path))
    assert code == 0
    assert [o["valid"] for o in out] == [True, False, False, False, True, False, False]
    assert out[0]["reason"] == "ok" and out[0]["class"] == "human"
    assert out[1]["reason"] == "session_expired"
    assert out[2]["reason"] == "invalid_session"
    assert out[3]["reason"] == out[5]["reason"] == out[6]["reason"] == "malformed"


def test_verify_unknown_scheme_is_usage_error():
    code, out, err = verify("nonsense", ["{}"])
    assert code == 2 and out == [] and "unknown scheme" in err
