"""Packaging: the folders install as one ``popgate.*`` namespace and nothing else.

(a) pyproject's ``packages`` list is exactly the folders with ``__init__.py``
    under gateway/, verifiers/ and policies/, and every package-data glob
    matches a file;
(b) in the installed environment, from a neutral directory, ``gateway``,
    ``verifiers`` and ``policies`` are not importable as ours, while the
    ``popgate.*`` packages are;
(c) PyPI's unrelated ``verifiers`` distribution can be installed next to
    popgate: a stand-in built here with pip (no network) imports as
    ``verifiers`` and ``popgate.verifiers`` stays ours.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("gateway", "verifiers", "policies")


def pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def package_dirs() -> dict[str, Path]:
    """``popgate.*`` package name → its folder, from the package-dir mapping."""
    mapping = pyproject()["tool"]["setuptools"]["package-dir"]
    out: dict[str, Path] = {}
    for package in pyproject()["tool"]["setuptools"]["packages"]:
        base = max((p for p in mapping if package == p or package.startswith(p + ".")), key=len)
        out[package] = ROOT / mapping[base] / Path(*package[len(base) :].split(".")[1:])
    return out


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without anything that would put the repository on sys.path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(extra)
    return env


# -- (a) the declared packages and package data


def test_packages_list_matches_the_folders() -> None:
    found = {
        ".".join(["popgate", *init.parent.relative_to(ROOT).parts])
        for layer in LAYERS
        for init in (ROOT / layer).rglob("__init__.py")
    }
    declared = pyproject()["tool"]["setuptools"]["packages"]
    assert len(declared) == len(set(declared)), "a package is listed twice"
    assert set(declared) == found


def test_package_dir_maps_the_three_folders() -> None:
    mapping = pyproject()["tool"]["setuptools"]["package-dir"]
    assert mapping == {f"popgate.{layer}": layer for layer in LAYERS}
    assert all(path.is_dir() and (path / "__init__.py").is_file() for path in package_dirs().values())


def test_package_data_globs_match_files() -> None:
    dirs = package_dirs()
    data = pyproject()["tool"]["setuptools"]["package-data"]
    assert data, "no package data declared"
    for package, globs in data.items():
        assert package in dirs, f"package-data for an undeclared package {package}"
        for pattern in globs:
            matched = [p for p in dirs[package].glob(pattern) if p.is_file()]
            assert matched, f"{package}: {pattern!r} matches no file"


# -- (b) the installed environment, from a neutral directory

PROBE = """
import importlib, json, sys
out = {}
for name in sys.argv[1:]:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        out[name] = {"error": exc.name}
    else:
        out[name] = {"file": getattr(module, "__file__", None)}
print(json.dumps(out))
"""


def probe(names: list[str], cwd: Path, **env: str) -> dict[str, dict[str, str | None]]:
    res = subprocess.run(
        [sys.executable, "-c", PROBE, *names],
        cwd=cwd,
        env=clean_env(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    found: dict[str, dict[str, str | None]] = json.loads(res.stdout)
    return found


def test_top_level_names_are_not_ours_and_popgate_imports(tmp_path: Path) -> None:
    found = probe([*LAYERS, *(f"popgate.{layer}" for layer in LAYERS)], tmp_path)
    for layer in LAYERS:
        assert found[layer] == {"error": layer}, f"`import {layer}` works from a neutral directory"
        ours = found[f"popgate.{layer}"].get("file")
        assert ours is not None, found[f"popgate.{layer}"]
        assert Path(ours).parent.name == layer and Path(ours).name == "__init__.py"


# -- (c) PyPI's unrelated ``verifiers`` next to popgate.verifiers


def can_build_wheels() -> bool:
    """Whether pip can build the stand-in without build isolation (no network):
    setuptools with its own bdist_wheel (70.1+), or setuptools and ``wheel``."""
    if importlib.util.find_spec("setuptools") is None:
        return False
    try:
        return importlib.util.find_spec("setuptools.command.bdist_wheel") is not None or (
            importlib.util.find_spec("wheel") is not None
        )
    except ImportError:
        return False


@pytest.mark.slow
def test_an_unrelated_verifiers_distribution_does_not_clash(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "verifiers").mkdir(parents=True)
    (src / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "verifiers"\nversion = "0.0.1"\n'
        '[tool.setuptools]\npackages = ["verifiers"]\n',
        encoding="utf-8",
    )
    (src / "verifiers" / "__init__.py").write_text('"""A stand-in for PyPI\'s verifiers."""\n')
    (src / "verifiers" / "standin.py").write_text('WHO = "the stand-in"\n')
    target = tmp_path / "site"
    if not can_build_wheels():  # no offline build backend in this venv: lay the package out by hand
        (target / "verifiers").mkdir(parents=True)
        for f in ("__init__.py", "standin.py"):
            (target / "verifiers" / f).write_bytes((src / "verifiers" / f).read_bytes())
    else:
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
        install = subprocess.run(
            [*pip, "--no-index", "--target", str(target), str(src)],
            env=clean_env(PIP_DISABLE_PIP_VERSION_CHECK="1"),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert install.returncode == 0, install.stderr
        assert (target / "verifiers" / "standin.py").is_file()
    code = (
        "import json, verifiers, verifiers.standin, popgate.verifiers, popgate.verifiers.errors\n"
        "print(json.dumps({'standin': verifiers.__file__, 'ours': popgate.verifiers.__file__,\n"
        "    'who': verifiers.standin.WHO, 'same': verifiers is popgate.verifiers,\n"
        "    'errors': popgate.verifiers.errors.__name__}))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=clean_env(PYTHONPATH=str(target)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    seen = json.loads(res.stdout)
    assert seen["who"] == "the stand-in"
    assert Path(seen["standin"]).is_relative_to(target)
    assert not Path(seen["ours"]).is_relative_to(target)
    assert seen["same"] is False
    assert seen["errors"] == "popgate.verifiers.errors"
