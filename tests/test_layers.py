"""The import layers of popgate, checked on the source with ``ast``.

Rules, over every module of gateway/, verifiers/ and policies/ (as their
``popgate.*`` names), counting module-level and function-level imports:

(a) ``popgate.verifiers`` imports nothing of ours outside ``popgate.verifiers``;
(b) ``popgate.policies`` imports only ``popgate.policies`` and ``popgate.verifiers``;
(c) no import cycle among our modules (strongly connected components, Tarjan).
    Imports under ``if TYPE_CHECKING:`` never run, so they are not edges here
    (they still count for (a) and (b));
(d) no function-level import of our own modules, unless the import's line (or
    the line above it) carries a comment containing the marker ``why:``, e.g.
    ``# why: optional dependency, imported only when configured``.

The checker is plain functions over a ``{module name: source}`` mapping, so
the test of the test below feeds it a synthetic tree with each violation.
"""

from __future__ import annotations

import ast
import io
import tokenize
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "popgate"
LAYERS = ("gateway", "verifiers", "policies")
MARKER = "why:"
# What each layer may import of ours (rules (a) and (b)); gateway may import everything.
ALLOWED = {
    f"{PACKAGE}.verifiers": (f"{PACKAGE}.verifiers",),
    f"{PACKAGE}.policies": (f"{PACKAGE}.policies", f"{PACKAGE}.verifiers"),
}


@dataclass(frozen=True)
class Import:
    """One import of one of our modules."""

    importer: str
    target: str
    line: int
    function_level: bool
    marked: bool  # carries the MARKER comment
    type_only: bool  # under ``if TYPE_CHECKING:``


def read_tree(root: Path = ROOT) -> dict[str, str]:
    """``{popgate.* module name: source}`` for every .py file of the three layers."""
    modules: dict[str, str] = {}
    for layer in LAYERS:
        for path in sorted((root / layer).rglob("*.py")):
            parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path.read_text(encoding="utf-8")
    return modules


def _is_package(name: str, modules: Mapping[str, str]) -> bool:
    prefix = name + "."
    return any(m.startswith(prefix) for m in modules)


def _resolve(name: str, modules: Mapping[str, str]) -> str | None:
    """The longest prefix of ``name`` that is one of our modules."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _comments(source: str) -> dict[int, str]:
    out: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, in_function: bool, type_only: bool) -> Iterator[tuple[ast.AST, bool, bool]]:
    """Every node below ``node`` with whether it sits in a function / a TYPE_CHECKING block."""
    for child in ast.iter_child_nodes(node):
        yield child, in_function, type_only
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, True, type_only)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for stmt in child.body:
                yield stmt, in_function, True
                yield from _walk(stmt, in_function, True)
            for stmt in child.orelse:
                yield stmt, in_function, type_only
                yield from _walk(stmt, in_function, type_only)
        else:
            yield from _walk(child, in_function, type_only)


def _targets(node: ast.Import | ast.ImportFrom, importer: str, modules: Mapping[str, str]) -> set[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:  # relative: from the importer's package
            package = importer if _is_package(importer, modules) else importer.rpartition(".")[0]
            for _ in range(node.level - 1):
                package = package.rpartition(".")[0]
            base = f"{package}.{base}" if base else package
        # ``from pkg import mod`` imports the module pkg.mod; ``from mod import name`` imports mod.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
    found = {_resolve(n, modules) for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}
    return {t for t in found if t is not None and t != importer}


def imports_of(modules: Mapping[str, str]) -> list[Import]:
    """Every import of one of our modules, by any of our modules."""
    out: list[Import] = []
    for importer, source in modules.items():
        comments = _comments(source)
        for node, in_function, type_only in _walk(ast.parse(source), False, False):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            lines = range(node.lineno - 1, (node.end_lineno or node.lineno) + 1)
            marked = any(MARKER in comments.get(n, "") for n in lines)
            for target in sorted(_targets(node, importer, modules)):
                out.append(Import(importer, target, node.lineno, in_function, marked, type_only))
    return out


def _layer(module: str) -> str:
    return ".".join(module.split(".")[:2])


def layer_violations(imports: list[Import]) -> list[str]:
    """Rules (a) and (b): imports across a layer boundary that is not allowed."""
    out = []
    for imp in imports:
        allowed = ALLOWED.get(_layer(imp.importer))
        if allowed is not None and _layer(imp.target) not in allowed:
            out.append(f"{imp.importer}:{imp.line} imports {imp.target} (layer {_layer(imp.importer)})")
    return out


def cycles(imports: list[Import]) -> list[list[str]]:
    """Rule (c): each strongly connected component of more than one module (Tarjan)."""
    edges: dict[str, set[str]] = {}
    for imp in imports:
        if not imp.type_only:
            edges.setdefault(imp.importer, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def connect(v: str) -> None:  # recursion depth is bounded by the module count (~120)
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            connect(v)
    return sorted(found)


def unmarked_function_imports(imports: list[Import]) -> list[str]:
    """Rule (d): function-level imports of our modules without the ``why:`` marker."""
    return [
        f"{imp.importer}:{imp.line} imports {imp.target} inside a function (no '# {MARKER}' comment)"
        for imp in imports
        if imp.function_level and not imp.marked
    ]


def check(modules: Mapping[str, str]) -> dict[str, list[str]]:
    """Every violation of the four rules, by rule."""
    imports = imports_of(modules)
    return {
        "layers": layer_violations(imports),
        "cycles": [" <-> ".join(c) for c in cycles(imports)],
        "function-level": unmarked_function_imports(imports),
    }


# -- the real tree


def test_real_tree_layers() -> None:
    modules = read_tree()
    assert f"{PACKAGE}.gateway.app" in modules and f"{PACKAGE}.verifiers.puzzle" in modules
    problems = check(modules)
    report = "\n".join(f"{rule}: {p}" for rule, found in problems.items() for p in found)
    assert not report, "import layer violations:\n" + report


# -- the test of the test: a synthetic tree with each violation

SYNTHETIC = {
    "popgate.gateway": "",
    "popgate.gateway.low": "import popgate.gateway.high\n",
    "popgate.gateway.high": "from popgate.gateway import low\n",  # a cycle low <-> high
    "popgate.gateway.lazy": "def f():\n    from popgate.gateway.low import x\n    return x\n",
    "popgate.gateway.marked": (
        "def f():\n"
        "    # why: optional dependency, only when configured\n"
        "    from popgate.gateway.low import x\n"
        "    return x\n"
        "def g():\n"
        "    import popgate.gateway.low  # why: the same, on its line\n"
    ),
    "popgate.gateway.typed": (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from popgate.gateway.typed_back import T\n"
    ),
    "popgate.gateway.typed_back": "from popgate.gateway.typed import U\n",  # type-only: no cycle
    "popgate.verifiers": "",
    "popgate.verifiers.pure": "from popgate.verifiers import errors\nimport json\n",
    "popgate.verifiers.errors": "",
    "popgate.verifiers.upward": "from popgate.gateway.low import thing\n",
    "popgate.verifiers.relative": "from ..gateway import low\nfrom . import errors\n",
    "popgate.policies": "",
    "popgate.policies.ok": "from popgate.verifiers.pure import y\nfrom popgate.policies import ok2\n",
    "popgate.policies.ok2": "",
    "popgate.policies.sideways": "def f():\n    from popgate.gateway.high import z  # why: test\n",
}


def test_checker_reports_an_upward_import() -> None:
    problems = check(SYNTHETIC)["layers"]
    assert any(p.startswith("popgate.verifiers.upward:1 imports popgate.gateway.low") for p in problems)
    assert any(p.startswith("popgate.verifiers.relative:1 imports popgate.gateway.low") for p in problems)
    assert any(p.startswith("popgate.policies.sideways:2 imports popgate.gateway.high") for p in problems)
    assert len(problems) == 3, problems  # verifiers->verifiers, policies->verifiers/policies are fine


def test_checker_reports_a_cycle() -> None:
    assert check(SYNTHETIC)["cycles"] == ["popgate.gateway.high <-> popgate.gateway.low"]


def test_checker_reports_an_unmarked_function_level_import() -> None:
    problems = check(SYNTHETIC)["function-level"]
    assert problems == [
        "popgate.gateway.lazy:2 imports popgate.gateway.low inside a function (no '# why:' comment)"
    ]


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("import popgate.gateway.low.attr\n", "popgate.gateway.low"),
        ("from popgate.gateway import high\n", "popgate.gateway.high"),
        ("from popgate.gateway.high import name\n", "popgate.gateway.high"),
        ("from popgate.gateway import name\n", "popgate.gateway"),
        ("from . import high\n", "popgate.gateway.high"),
        ("from .high import name\n", "popgate.gateway.high"),
    ],
)
def test_checker_resolves_names_to_modules(source: str, target: str) -> None:
    tree = {**SYNTHETIC, "popgate.gateway.probe": source}
    found = [i.target for i in imports_of(tree) if i.importer == "popgate.gateway.probe"]
    assert found == [target]


def test_a_clean_tree_has_no_violations() -> None:
    clean = {k: v for k, v in SYNTHETIC.items() if k not in ("popgate.gateway.high", "popgate.gateway.lazy")}
    clean = {
        k: v
        for k, v in clean.items()
        if k not in ("popgate.verifiers.upward", "popgate.verifiers.relative", "popgate.policies.sideways")
    }
    assert check(clean) == {"layers": [], "cycles": [], "function-level": []}
