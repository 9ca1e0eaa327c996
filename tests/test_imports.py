"""The import graph of the project's code: no cycles, and one-way layers.

Layers: `flows -> pipeline -> mtmusicldm`; `studio -> mtmusicldm`; `cli` (the `mtmusicldm` command) may import
`pipeline`, `studio` and `mtmusicldm`. `mtmusicldm` imports none of the others; nothing imports `cli`.

Imports are read from the source (ast). Imports inside `if TYPE_CHECKING:` never run and are skipped.
* Cycles: module-level imports (what runs when a module is imported) must form no cycle between modules. Imports
  inside functions are lazy and allowed to point anywhere the layers allow, so they are not counted for cycles;
  they exist to keep heavy dependencies (torch, the web stack) off a light module's import path, never to
  break a cycle (`test_lazy_imports_close_no_cycle` checks that too, except the lazy re-exports of package
  `__init__` files, such as `mtmusicldm.MTMusicLDM`).
* Layers: every import counts, lazy ones included.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("mtmusicldm", "pipeline", "flows", "studio", "cli")
ALLOWED = {"mtmusicldm": set(), "pipeline": {"mtmusicldm"}, "flows": {"pipeline", "mtmusicldm"},
           "studio": {"mtmusicldm"}, "cli": {"pipeline", "studio", "mtmusicldm"}}


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The project module `name` refers to (the longest importable prefix: `a.b.func` -> `a.b`)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in MODULES:
            return ".".join(parts[:i])
    return None


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(module: str) -> dict[str, bool]:
    """{imported project module: True if only inside functions (lazy)} for one module."""
    found: dict[str, bool] = {}

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            targets: list[str] = []
            if isinstance(child, ast.Import):
                targets = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                targets = [f"{child.module}.{a.name}" for a in child.names]
            for target in filter(None, map(_resolve, targets)):
                if target != module:
                    found[target] = found.get(target, True) and inner
            visit(child, inner)

    visit(ast.parse(MODULES[module].read_text()), False)
    return found


GRAPH = {m: imports(m) for m in MODULES}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle of a directed graph as a path [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := dfs(nxt)) is not None:
                return cycle
        state[node] = 2
        path.pop()
        return None

    for start in sorted(edges):
        if start not in state and (cycle := dfs(start)) is not None:
            return cycle
    return None


def test_no_import_cycle_between_modules() -> None:
    edges = {m: {t for t, lazy in targets.items() if not lazy} for m, targets in GRAPH.items()}
    assert find_cycle(edges) is None, f"module-level import cycle: {' -> '.join(find_cycle(edges) or [])}"


def test_lazy_imports_close_no_cycle() -> None:
    edges = {m: {t for t, lazy in targets.items() if not (lazy and MODULES[m].name == "__init__.py")}
             for m, targets in GRAPH.items()}
    cycle = find_cycle(edges)
    assert cycle is None, f"import cycle through a lazy import: {' -> '.join(cycle or [])}"


@pytest.mark.parametrize("package", PACKAGES)
def test_layers_are_one_way(package: str) -> None:
    wrong = sorted(f"{m} -> {t}" for m, targets in GRAPH.items() if m.split(".")[0] == package
                   for t in targets if t.split(".")[0] not in ALLOWED[package] | {package})
    assert not wrong, f"{package} imports across the layers (allowed: {sorted(ALLOWED[package])}): {wrong}"


def test_the_checks_see_cycles_and_lazy_imports() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert GRAPH["mtmusicldm.config"]["mtmusicldm.diffusion.samplers"] is True  # lazy, inside validate()
    assert GRAPH["mtmusicldm.generation.api"]["mtmusicldm.generation.longform"] is False


def _project_import(node: ast.stmt) -> bool:
    names = ([a.name for a in node.names] if isinstance(node, ast.Import)
             else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else [])
    return any(n.split(".")[0] in PACKAGES for n in names)


def test_tests_import_the_project_plainly():
    """A broken import of our own code must fail the suite, not turn into a skip (importorskip, except ImportError)."""
    found = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "importorskip" and node.args
                    and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).split(".")[0] in PACKAGES):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} importorskip({node.args[0].value!r})")
            if isinstance(node, ast.Try) and any(_project_import(s) for s in node.body):
                caught = {getattr(h.type, "id", None) for h in node.handlers}
                if caught & {"ImportError", "ModuleNotFoundError", None}:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} try/except ImportError")
    assert not found, found
