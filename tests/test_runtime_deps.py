"""`make run` installs only the runtime dependencies (pyproject `dependencies` + the `fast`
extra): everything popgate imports at run time must be among them.

A subprocess imports every `popgate.*` module, then runs `popgate check` and builds the
demo gateway, with a meta-path guard that refuses any top-level module outside the
standard library and the distributions the runtime requirements pull in (computed from
the installed metadata, transitively). A control import of a test-only package must fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import distribution, packages_distributions

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.support.servers import ROOT

RUNTIME_EXTRAS = ("fast",)  # Makefile EXTRAS_run
# Modules only imported when an optional extra's feature is on (a `# why:` lazy import), and
# the top-level package they need: [tracing] → opentelemetry (extra `tracing`).
OPTIONAL = {"popgate.gateway.ops.otel": "opentelemetry"}

GUARDED = r"""
import importlib, json, pkgutil, sys
allowed = set(json.loads(sys.argv[1]))
class Guard:
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        if top in sys.stdlib_module_names or top in allowed or top == "popgate" or top.startswith("_"):
            return None
        raise ModuleNotFoundError(f"{name} is not a runtime dependency of popgate", name=name)
sys.meta_path.insert(0, Guard())
try:
    import pytest  # the control: a test-only package must be refused
except ModuleNotFoundError:
    pass
else:
    raise SystemExit("the guard let a test-only package through")
optional = json.loads(sys.argv[3])  # modules of an optional extra: they must need it, nothing else
names = []
for pkg in ("popgate.gateway", "popgate.verifiers", "popgate.policies"):
    mod = importlib.import_module(pkg)
    for info in pkgutil.walk_packages(mod.__path__, pkg + "."):
        if info.name in optional:
            try:
                importlib.import_module(info.name)
            except ModuleNotFoundError as exc:
                assert exc.name.partition(".")[0] == optional[info.name], exc
            else:
                raise SystemExit(f"{info.name} imported without its extra")
        elif not info.name.endswith(".__main__"):  # it runs the command
            importlib.import_module(info.name)
            names.append(info.name)
from popgate.gateway.cli.main import main
status = main(["check", "--config", sys.argv[2]])
print(json.dumps({"modules": names, "check": status}))
"""


def runtime_distributions() -> set[str]:
    """popgate's runtime requirements (with RUNTIME_EXTRAS), transitively, as installed."""
    done: set[tuple[str, tuple[str, ...]]] = set()
    todo: list[tuple[str, tuple[str, ...]]] = [("popgate", RUNTIME_EXTRAS)]
    while todo:
        name, extras = todo.pop()
        if (canonicalize_name(name), extras) in done:
            continue
        done.add((canonicalize_name(name), extras))
        for text in distribution(name).requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in ("", *extras)]
            if req.marker is None or any(req.marker.evaluate(env) for env in envs):
                todo.append((req.name, tuple(sorted(req.extras))))
    return {name for name, _ in done}


def allowed_modules() -> list[str]:
    dists = runtime_distributions()
    return sorted(
        mod
        for mod, owners in packages_distributions().items()
        if any(canonicalize_name(d) in dists for d in owners)
    )


def test_runtime_dependencies_exclude_the_test_tools():
    dists = runtime_distributions()
    assert {"aiohttp", "redis", "cryptography", "uvloop"} <= dists
    for tool in ("pytest", "playwright", "locust", "matplotlib", "x402", "mypy", "ruff", "hypothesis"):
        assert tool not in dists, tool


def test_every_popgate_module_imports_with_runtime_dependencies_only(tmp_path):
    for name in ("session", "puzzle", "admin"):
        (tmp_path / f"{name}.key").write_text("k" * 43)
    demo = (ROOT / "deploy" / "demo.toml").read_text()
    demo = demo.replace("../var/demo-", "").replace("../policies/", f"{ROOT}/policies/")
    demo = demo.replace("sqlite:///../var/store.db", "memory://")
    (tmp_path / "demo.toml").write_text(demo)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            GUARDED,
            json.dumps(allowed_modules()),
            str(tmp_path / "demo.toml"),
            json.dumps(OPTIONAL),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["check"] == 0
    assert len(result["modules"]) > 100 and "popgate.gateway.http.server" in result["modules"]
