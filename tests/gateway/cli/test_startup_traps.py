"""Start-up traps, through the real `popgate` command as a subprocess: each is one clear
line with the fix and exit status 2, never a traceback (gateway/cli/startup.py)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from tests.support.servers import ROOT, free_port, wait_port_async

KEY = "k" * 43


def popgate(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "popgate.gateway", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def config(tmp: Path, body: str = "", *, puzzle: bool = True, listen: str = "", admin: str = "") -> Path:
    """A config in ``tmp/conf/`` whose key files sit beside it, named relatively."""
    d = tmp / "conf"
    d.mkdir(exist_ok=True)
    (d / "session.key").write_text(KEY)
    (d / "puzzle.key").write_text(KEY)
    path = d / "popgate.toml"
    path.write_text(
        f'[server]\nupstream = "http://127.0.0.1:9"\nlisten = "{listen or f"127.0.0.1:{free_port()}"}"\n'
        f'admin = "{admin or f"127.0.0.1:{free_port()}"}"\n[store]\nurl = "memory://"\n'
        '[sessions]\nkeys = [{ kid = "k1", secret_file = "session.key" }]\n'
        + ('[puzzle]\nkeys = [{ kid = "p1", secret_file = "puzzle.key" }]\n' if puzzle else "")
        + body
    )
    return path


def clean_failure(out: subprocess.CompletedProcess[str]) -> list[str]:
    assert out.returncode == 2, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr and "Error:" not in out.stderr.split("popgate:")[0], out.stderr
    assert out.stderr.startswith("popgate: "), out.stderr
    return out.stderr.strip().splitlines()


def test_dead_end_without_a_way_out_is_a_start_up_error(tmp_path):
    """The README's old minimal config (no [puzzle]): unknown clients would get ways_out [] ."""
    path = config(tmp_path, puzzle=False)
    for command in ("run", "check"):
        lines = clean_failure(popgate(command, "--config", str(path), cwd=tmp_path))
        assert any("class unknown challenged with no way out" in x and "[puzzle]" in x for x in lines), lines


def test_dead_end_in_a_policy_rule_names_rule_class_and_table(tmp_path):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "policy.toml").write_text(
        '[default]\nall = "allow"\n[[rules]]\nname = "search"\npath = "/search"\n'
        'actions.unknown = { kind = "challenge", ways = ["pay"], price = "0.01" }\n'
    )
    lines = clean_failure(
        popgate("run", "--config", str(config(tmp_path, '[policy]\nfile = "policy.toml"\n')), cwd=tmp_path)
    )
    assert any("rule 'search'" in x and "class unknown" in x and "[x402]" in x for x in lines), lines


async def test_explicit_empty_ways_starts_with_a_loud_warning(tmp_path, upstream):
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "policy.toml").write_text('[default]\nall = { kind = "challenge", ways = [] }\n')
    port = free_port()
    path = config(tmp_path, '[policy]\nfile = "policy.toml"\n', listen=f"127.0.0.1:{port}")
    path.write_text(path.read_text().replace("http://127.0.0.1:9", upstream))
    proc = subprocess.Popen(
        [sys.executable, "-m", "popgate.gateway", "run", "--config", str(path)],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        await wait_port_async(port)
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/x") as r:
            assert r.status == 402 and (await r.json())["ways_out"] == []
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "WARNING popgate: NO WAY OUT:" in err and "ways = [] (on purpose?)" in err, err


def test_policy_file_errors_are_listed_once_without_traceback(tmp_path):
    (tmp_path / "conf").mkdir()
    policy = tmp_path / "conf" / "policy.toml"
    policy.write_text(
        '[default]\nhuman = "alow"\naccount = "allow"\nverified-agent = "allow"\nagent = "allow"\n'
        'unknown = "challenge"\n[[rules]]\ninclude = "(snippets)/nope.toml"\n'
    )
    lines = clean_failure(
        popgate("run", "--config", str(config(tmp_path, '[policy]\nfile = "policy.toml"\n')))
    )
    assert lines[0] == "popgate: invalid configuration:"
    problems = lines[1:]
    assert len(problems) == 2, problems  # the typo once, no spurious "missing default" line
    assert "default.human: expected allow, deny, challenge or a table, got 'alow'" in problems[0]
    assert "rules[0].include" in problems[1]
    policy.write_bytes(b"\xff\xfe[default]\n")
    lines = clean_failure(popgate("check", "--config", str(tmp_path / "conf" / "popgate.toml")))
    assert any("not UTF-8 text" in x for x in lines), lines


def test_port_in_use_is_one_line_with_the_fix(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        out = popgate("run", "--config", str(config(tmp_path, listen=f"127.0.0.1:{port}")))
        lines = clean_failure(out)
    assert len(lines) == 1, lines
    assert f"server.listen = '127.0.0.1:{port}': port {port} is already in use" in lines[0]
    assert "--listen" in lines[0]


def test_address_not_ours_and_unwritable_store_are_one_line_each(tmp_path):
    out = popgate("run", "--config", str(config(tmp_path)), "--admin", "192.0.2.1:9090")
    assert (
        "server.admin = '192.0.2.1:9090': 192.0.2.1 is not an address of this host" in clean_failure(out)[0]
    )
    out = popgate("run", "--config", str(config(tmp_path)), "--store", "sqlite:////proc/popgate/store.db")
    (line,) = clean_failure(out)
    assert line.startswith(
        "popgate: store.url = 'sqlite:////proc/popgate/store.db': cannot create /proc/popgate"
    )


def test_missing_key_file_names_the_resolved_path(tmp_path):
    path = config(tmp_path)
    (tmp_path / "conf" / "session.key").unlink()
    lines = clean_failure(popgate("run", "--config", str(path)))
    assert f"cannot read {tmp_path / 'conf' / 'session.key'}: No such file or directory" in "\n".join(lines)


async def test_relative_paths_resolve_against_the_config_directory(tmp_path, upstream):
    """Key files and the policy named relatively are found from another working directory."""
    (tmp_path / "conf" / "policies").mkdir(parents=True)
    (tmp_path / "conf" / "policies" / "p.toml").write_text(
        '[default]\nall = "allow"\n[[rules]]\nname = "hidden"\npath = "/hidden"\naction = "deny"\n'
    )
    port = free_port()
    path = config(tmp_path, '[policy]\nfile = "policies/p.toml"\n', listen=f"127.0.0.1:{port}")
    path.write_text(path.read_text().replace("http://127.0.0.1:9", upstream))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "popgate.gateway", "run", "--config", "../conf/popgate.toml"], cwd=elsewhere
    )
    try:
        await wait_port_async(port)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/hello") as r:
                assert r.status == 200
            async with http.get(f"http://127.0.0.1:{port}/hidden") as r:
                assert r.status == 403  # the policy file beside the config was loaded
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def test_listen_colon_port_means_every_interface(tmp_path, upstream):
    port = free_port()
    path = config(tmp_path, '[policy]\ndefault = "allow"\n', listen=f":{port}")
    path.write_text(path.read_text().replace("http://127.0.0.1:9", upstream))
    proc = subprocess.Popen(
        [sys.executable, "-m", "popgate.gateway", "run", "--config", str(path)], cwd=tmp_path
    )
    try:
        await wait_port_async(port)
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert f"0.0.0.0:{port}" in listening or f"*:{port}" in listening, listening
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/hello") as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    time.sleep(0)  # the process is gone: its port with it


def test_permission_problems_are_one_line_each(tmp_path):
    """As an unprivileged user (root drops to nobody with setpriv): a port below the
    unprivileged range, an unreadable key file, a store directory it cannot write."""
    low = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    assert low > 1, "unprivileged users may bind every port here: nothing to show"
    assert shutil.which("setpriv"), "install util-linux (setpriv)"
    d = Path(tempfile.mkdtemp(prefix="popgate-perm-"))  # readable by nobody, unlike pytest's tmp
    try:
        d.chmod(0o755)
        path = config(d)
        for f in (path, d / "conf" / "session.key", d / "conf" / "puzzle.key"):
            f.chmod(0o644)
        (d / "conf").chmod(0o755)
        (d / "locked").mkdir(mode=0o555)
        cases = [
            (["--listen", f"127.0.0.1:{low - 1}"], f"no permission to listen on port {low - 1}"),
            (["--store", f"sqlite:///{d}/locked/store.db"], f"{d}/locked is not writable by this user"),
        ]
        for args, says in cases:
            (line,) = clean_failure(as_nobody("run", "--config", str(path), *args))
            assert says in line, line
        (d / "conf" / "session.key").chmod(0o600)
        lines = clean_failure(as_nobody("run", "--config", str(path)))
        assert any(f"cannot read {d}/conf/session.key: Permission denied" in x for x in lines), lines
    finally:
        shutil.rmtree(d, ignore_errors=True)


def as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    drop = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.getuid() == 0 else []
    return subprocess.run(
        [*drop, sys.executable, "-m", "popgate.gateway", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
