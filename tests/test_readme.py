"""README.md runs as written.

In a copy of the repository (the files git tracks or would track, as a fresh clone has them)
the test starts the demo with the README's own `make run` (on free loopback ports: the
examples' 8080/9090/8000 are rewritten to them; the venv is this checkout's, already
installed), then runs every ```sh and ```python block in README order in that copy, with
`.venv/bin` first on PATH as `source .venv/bin/activate` would put it. A block must exit 0;
a `# {...}` comment line in a shell block is output that must appear. ```toml blocks with
a `[default]` table are policies and must compile. Links to repository files must resolve.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from popgate.policies.loader import loads
from tests.support.servers import ROOT, free_port, wait_port

README = ROOT / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
NOT_RUN = {"json", "http", ""}  # request bodies and shapes, expected output, the layout tree


TESTED = re.compile(r"<!-- tested: (\S+\.py)::(\w+) -->\n\Z")


def blocks() -> list[tuple[str, str, int]]:
    text = README.read_text()
    return [(m[1], m[2], text.count("\n", 0, m.start()) + 1) for m in FENCE.finditer(text)]


def marked_blocks() -> dict[int, tuple[str, str]]:
    """Blocks marked ``<!-- tested: tests/x.py::test_name -->`` on the line before their fence:
    examples that need more than the demo (a World ID app, a delegation), run by that test."""
    text = README.read_text()
    out = {}
    for m in FENCE.finditer(text):
        mark = TESTED.search(text, 0, m.start())
        if mark:
            out[text.count("\n", 0, m.start()) + 1] = (mark[1], mark[2])
    return out


def copy_repository(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        src = ROOT / name.decode()
        if src.is_file() and not name.startswith(b"tests/node/"):
            (dest / name.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name.decode())
    (dest / ".venv").symlink_to(Path(sys.prefix))


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    clone = tmp_path_factory.mktemp("clone")
    copy_repository(clone)
    ports = {"8080": str(free_port()), "9090": str(free_port()), "8000": str(free_port())}
    stamp = clone / ".venv" / ".installed-run"
    make = [
        "make",
        "-o",
        ".venv/.installed-run",  # installed already (this venv holds the runtime set and more)
        "run",
        f"DEMO_LISTEN=127.0.0.1:{ports['8080']}",
        f"DEMO_ADMIN=127.0.0.1:{ports['9090']}",
        f"DEMO_ORIGIN=127.0.0.1:{ports['8000']}",
    ]
    assert shutil.which("make"), "install make (Debian package make)"
    log = (clone / "make-run.log").open("w")
    proc = subprocess.Popen(make, cwd=clone, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        for port in ports.values():
            wait_port(int(port), 60, proc)
        yield clone, ports
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the process group make run started: make, origin, popgate
        proc.wait(timeout=30)
        log.close()
        assert not stamp.exists() or stamp.is_file()


def localize(code: str, ports: dict[str, str]) -> str:
    for port, free in ports.items():
        code = code.replace(f"127.0.0.1:{port}", f"127.0.0.1:{free}")
    return code


def expected_outputs(code: str) -> list[dict[str, object]]:
    return [json.loads(line[2:]) for line in code.splitlines() if line.startswith("# {")]


def json_objects(text: str) -> list[object]:
    """Every JSON object printed, lines or not (curl prints no newline)."""
    found, decoder, i = [], json.JSONDecoder(), text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except ValueError:
            end = i + 1
        else:
            found.append(obj)
        i = text.find("{", end)
    return found


def run_block(lang: str, code: str, clone: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{clone / '.venv' / 'bin'}:{os.environ['PATH']}", "VIRTUAL_ENV": sys.prefix}
    if lang == "sh":
        argv = ["bash", "-euo", "pipefail", "-c", code]
    else:
        argv = [str(clone / ".venv" / "bin" / "python"), "-c", code]
    return subprocess.run(argv, cwd=clone, env=env, capture_output=True, text=True, timeout=120)


def test_every_shell_and_python_example_runs(demo):
    clone, ports = demo
    ran = 0
    elsewhere = marked_blocks()
    for lang, code, line in blocks():
        if lang in NOT_RUN or lang == "toml" or line in elsewhere:
            continue
        assert lang in ("sh", "python"), (
            f"README.md:{line}: a ```{lang} block: run it here or list it in NOT_RUN"
        )
        if code.startswith("make run "):
            continue  # the block the demo fixture ran (and `make test`, which is this suite)
        out = run_block(lang, localize(code, ports), clone)
        where = f"README.md:{line} ({lang})"
        assert out.returncode == 0, f"{where} exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
        assert "Traceback" not in out.stderr, f"{where}:\n{out.stderr}"
        printed = json_objects(out.stdout)
        for want in expected_outputs(code):
            assert want in printed, f"{where}: expected {want} in\n{out.stdout}"
        ran += 1
    assert ran >= 6


def test_admin_index_and_the_demo_stack(demo):
    """The demo the README describes: a 402 on the proxy, the admin index, the credits API on."""
    clone, ports = demo
    out = run_block("sh", f"curl -s 127.0.0.1:{ports['9090']}/", clone)
    routes = json.loads(out.stdout)["routes"]
    assert "GET /metrics" in routes and "POST /admin/credits/keys" in routes
    code = f"curl -s -o /dev/null -w '%{{http_code}}' 127.0.0.1:{ports['8080']}/api/things"
    assert run_block("sh", code, clone).stdout == "402"


def test_examples_tested_elsewhere_name_real_tests():
    """A marked block names a test function that exists (the issue's "or each example has a test
    that is linked from it")."""
    marked = marked_blocks()
    assert marked
    for line, (path, name) in marked.items():
        source = (ROOT / path).read_text()
        assert re.search(rf"^(async )?def {name}\(", source, re.M), f"README.md:{line}: no {path}::{name}"


def test_policy_examples_compile():
    policies = [code for lang, code, _ in blocks() if lang == "toml" and "[default]" in code]
    assert policies
    for code in policies:
        loads(code, base_dir=ROOT / "policies")


def test_linked_files_exist():
    links = re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", README.read_text())
    assert links
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, missing
