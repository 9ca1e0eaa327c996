"""dvc.yaml must declare exactly what each stage reads: its params sections and every code file it imports."""
from __future__ import annotations

import ast
import importlib
import inspect
from pathlib import Path

import pytest
import yaml

from mtmusicldm.config import Params

ROOT = Path(__file__).resolve().parents[2]
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
SECTIONS = set(Params.model_fields)
VALIDATION_ONLY = {ROOT / "mtmusicldm" / "config.py": {"mtmusicldm.diffusion.samplers",
                                                       "mtmusicldm.evaluation.embedders"}}
"""Imports that only decide whether a params file is accepted (registry names: a sampler, a FAD backbone), never
what a stage computes: they are not deps of every stage that validates params (those that use the registry list
its package anyway)."""


def _module_file(name: str) -> Path | None:
    base = ROOT / Path(*name.split("."))
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _project_imports(path: Path) -> set[str]:
    """Project modules (mtmusicldm.*, pipeline.*) imported anywhere in the file, including inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    names -= VALIDATION_ONLY.get(path, set())
    return {n for n in names if n.split(".")[0] in ("mtmusicldm", "pipeline") and _module_file(n)}


def _reachable_files(stage_file: Path) -> set[Path]:
    seen: set[Path] = set()
    todo = [stage_file]
    while todo:
        f = todo.pop()
        if f in seen:
            continue
        seen.add(f)
        if f == ROOT / "mtmusicldm" / "__init__.py":
            continue  # holds STEMS and a lazy `MTMusicLDM` attribute: importing the package imports nothing else
        for name in _project_imports(f):
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__ and a/b/__init__ too
                mf = _module_file(".".join(parts[:i]))
                if mf is not None:
                    todo.append(mf)
    return seen


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_params_match_run_signature(stage):
    module = importlib.import_module(f"pipeline.{stage}")
    sig_sections = {n for n in inspect.signature(module.run).parameters if n in SECTIONS}
    declared = {p.split(".")[0] for p in STAGES[stage].get("params", [])}
    assert sig_sections == declared, f"{stage}: run() reads {sorted(sig_sections)}, dvc.yaml declares {sorted(declared)}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_cover_imported_code(stage):
    deps = [ROOT / d for d in STAGES[stage]["deps"]]
    stage_file = ROOT / "pipeline" / f"{stage}.py"
    assert stage_file in deps, f"{stage}: its own script is not a dep"
    uncovered = []
    for f in sorted(_reachable_files(stage_file)):
        if f.parent == ROOT / "mtmusicldm" and f.name == "__init__.py":
            continue  # the top-level package file holds only STEMS and the version
        if f.stat().st_size == 0:
            continue  # empty package markers
        if not any(f == d or d in f.parents for d in deps):
            uncovered.append(str(f.relative_to(ROOT)))
    assert not uncovered, f"{stage}: imports code not listed in dvc.yaml deps: {uncovered}"
