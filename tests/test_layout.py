"""The package map holds: one namespace, each subpackage imports only the ones below it, every module
imports on its own in a fresh interpreter, and nothing imports the old generic top-level names."""

from __future__ import annotations

import ast
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import REPO

# subpackage -> the subpackages it may import (besides itself); README "Package map" says the same
ALLOWED = {
    "config": set(),
    "search": {"config"},
    "encoding": {"config"},
    "rerank": {"config", "encoding"},
    "backends": {"config", "search"},
    "ingest": {"config", "encoding", "backends"},
    "app": {"config", "search", "encoding", "rerank", "backends", "ingest"},
}
FOLDERS = {name: REPO / name for name in ALLOWED}


def _modules() -> list[tuple[str, str, Path]]:
    out = []
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            dotted = ".".join(("hybrid_search", package, *[p for p in parts if p != "__init__"]))
            out.append((package, dotted, path))
    return out


def _imports(path: Path) -> list[str]:
    """Every module an import statement names, at any depth (lazy and TYPE_CHECKING imports included)."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0 or node.module, path
            names.append(node.module or "")
    return names


def test_packages_import_only_the_packages_below_them():
    violations = []
    for package, dotted, path in _modules():
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] in ("config", "search", "ingest", "rerank", "encoding", "backends", "app"):
                violations.append(f"{dotted} imports the bare top-level {name!r}")
            elif parts[0] == "hybrid_search":
                if len(parts) == 1:
                    violations.append(f"{dotted} imports the hybrid_search facade")
                elif parts[1] != package and parts[1] not in ALLOWED[package]:
                    violations.append(f"{dotted} ({package}) imports {name} ({parts[1]})")
    assert violations == []


def test_the_facade_is_imported_by_no_package():
    assert all("hybrid_search" not in _imports(path) for _, _, path in _modules())


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_every_module_imports_alone_in_a_fresh_interpreter(package, tmp_path):
    modules = [dotted for pkg, dotted, _ in _modules() if pkg == package]

    def load(dotted: str) -> tuple[str, int, str]:
        out = subprocess.run(
            [sys.executable, "-c", f"import {dotted}"], capture_output=True, text=True, cwd=tmp_path, timeout=120
        )
        return dotted, out.returncode, out.stderr[-400:]

    with ThreadPoolExecutor(max_workers=2) as pool:
        failures = [r for r in pool.map(load, modules) if r[1] != 0]
    assert failures == []


def _runtime_imports(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """``(module, names)`` of every import that runs: module level and inside functions (lazy ones too),
    but not under ``if TYPE_CHECKING:``, which never executes and cannot take part in an import cycle."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for stmt in node.body for n in ast.walk(stmt)}
    out = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out += [(a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.append((node.module, tuple(a.name for a in node.names)))
    return out


def _file_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports at run time (``from pkg import sub`` counts as ``pkg.sub``)."""
    modules = {dotted: path for _, dotted, path in _modules()}
    graph: dict[str, set[str]] = {dotted: set() for dotted in modules}
    for dotted, path in modules.items():
        for module, names in _runtime_imports(path):
            targets = [f"{module}.{n}" for n in names if f"{module}.{n}" in modules] or [module]
            graph[dotted] |= {t for t in targets if t in modules and t != dotted}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_between_files():
    assert _cycles(_file_graph()) == []


def test_the_cycle_check_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_module_over_600_lines():
    long = {
        dotted: n for _, dotted, path in _modules() if (n := len(path.read_text(encoding="utf-8").splitlines())) > 600
    }
    assert long == {}


def test_every_package_folder_is_installed():
    """A subpackage missing from pyproject's package list is left out of the wheel (the editable install
    would still find it): every folder with an ``__init__.py`` must be listed."""
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"])
    found = set()
    for package, folder in FOLDERS.items():
        for init in folder.rglob("__init__.py"):
            parts = init.parent.relative_to(folder).parts
            found.add(".".join(("hybrid_search", package, *parts)))
    assert found - listed == set()
