"""Policy reload: in process (valid and invalid files) and by SIGHUP on a running
gateway process while requests flow (none dropped)."""

from __future__ import annotations

import asyncio
import os
import signal

import aiohttp
import pytest

from popgate.gateway.app import build_app
from popgate.gateway.extensions import default_extensions
from popgate.gateway.ops.config import ConfigError, load_config
from popgate.gateway.stores.memory import MemoryStore
from tests.conftest import url_of
from tests.gateway.schemes.puzzle_support import puzzle_extra
from tests.support.servers import free_port, gateway_process, wait_port, write_config

ALLOW = '[default]\nall = "allow"\n'
DENY = '[default]\nall = "deny"\n'


async def test_reload_swaps_policy_and_keeps_old_on_error(upstream, gateway_factory, http, tmp_path):
    """reload() compiles the edited file and swaps it in; an invalid file is refused, the old policy stays."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path, policy=ALLOW))
    pol = tmp_path / "policy.toml"
    async with http.get(url_of(gw, "/x")) as r:
        assert r.status == 200
    pol.write_text(DENY)
    assert gw.gateway.reload() is True
    async with http.get(url_of(gw, "/x")) as r:
        assert r.status == 403
    pol.write_text('[default]\nall = "sometimes"\n')
    assert gw.gateway.reload() is False
    async with http.get(url_of(gw, "/x")) as r:
        assert r.status == 403


async def test_reload_refuses_a_dead_end_as_start_up_does(upstream, gateway_factory, http, tmp_path, caplog):
    """A reloaded file whose challenge offers a way no table configures (pay, no [x402]) is
    refused like at start-up, naming the class and the table; the old policy keeps serving."""
    gw = await gateway_factory(upstream, extra=puzzle_extra(tmp_path, policy=ALLOW))
    pol = tmp_path / "policy.toml"
    pol.write_text('[default]\nall = { kind = "challenge", ways = ["pay"], price = "0.01" }\n')
    assert gw.gateway.reload() is False
    assert "no way out" in caplog.text and "[x402]" in caplog.text
    async with http.get(url_of(gw, "/x")) as r:
        assert r.status == 200
    pol.write_text('[default]\nall = { kind = "challenge", ways = ["puzzle"] }\n')
    assert gw.gateway.reload() is True
    async with http.get(url_of(gw, "/x")) as r:
        assert r.status == 402


def test_invalid_policy_file_fails_start_up_with_every_problem(upstream, tmp_path):
    """A bad policy file stops start-up with each problem and its key path."""
    bad = '[default]\nall = "allow"\n[[rules]]\nname = "x"\nnetworks = ["10.0.0.0/33"]\naction = "nope"\n'
    with pytest.raises(ConfigError) as exc:  # raised by load_config: every table in one pass
        config = load_config(
            write_config(tmp_path, "http://127.0.0.1:9", extra=puzzle_extra(tmp_path, policy=bad))
        )
        build_app(config, store=MemoryStore(), extensions=default_extensions())
    text = str(exc.value)
    assert "rules[0].networks[0]" in text and "rules[0].action" in text


async def test_sighup_reload_drops_no_requests(upstream, tmp_path):
    """A gateway process gets SIGHUP five times, alternating allow-all and deny-all, while 8 clients
    send requests without pause: every request gets 200 or 403 (none fails), and the last policy holds."""
    port = free_port()
    cfg = write_config(tmp_path, upstream, listen=port, extra=puzzle_extra(tmp_path, policy=ALLOW))
    pol = tmp_path / "policy.toml"
    proc = gateway_process(cfg)
    try:
        wait_port(port, proc=proc)
        url = f"http://127.0.0.1:{port}/x"
        statuses: list[int] = []
        errors: list[str] = []
        stop = asyncio.Event()

        async def client() -> None:
            async with aiohttp.ClientSession() as s:
                while not stop.is_set():
                    try:
                        async with s.get(url) as r:
                            await r.read()
                            statuses.append(r.status)
                    except aiohttp.ClientError as exc:
                        errors.append(repr(exc))

        tasks = [asyncio.create_task(client()) for _ in range(8)]
        for text in (DENY, ALLOW, DENY, ALLOW, DENY):
            await asyncio.sleep(0.3)
            pol.write_text(text)
            os.kill(proc.pid, signal.SIGHUP)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.gather(*tasks)
        assert not errors, errors[:3]
        assert set(statuses) == {200, 403}, set(statuses)
        assert len(statuses) > 100
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                assert r.status == 403
        pol.write_text("not toml [")
        os.kill(proc.pid, signal.SIGHUP)
        await asyncio.sleep(0.3)
        async with aiohttp.ClientSession() as s:
            async with s.get(url) as r:
                assert r.status == 403, "an invalid file must keep the running policy"
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(10)
