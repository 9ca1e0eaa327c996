"""pyproject.toml: ranges that admit the locked versions, the torch set pinned, every import declared, the console
script and the version."""
from __future__ import annotations

import ast
import importlib.metadata as md
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

import cli
from mtmusicldm import __version__

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
REQUIREMENTS = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]
                + sum(PYPROJECT["project"]["optional-dependencies"].values(), [])]
TORCH_SET = {"torch", "torchvision", "torchaudio", "numpy"}
NOT_IMPORTED = {  # declared, never imported by the project's code, and why they are declared anyway
    "encodec": "imported by frechet-audio-distance (the eval extra)",
    "huggingface-hub": "the hub client diffusers and transformers load weights with (offline settings)",
    "onnxruntime": "runs basic-pitch's ONNX model (imported by basic_pitch)",
    "pytest-timeout": "a pytest plugin",
    "torchvision": "part of the torch set laion-clap needs",
}
NOT_DECLARED = {  # imported, deliberately not in pyproject.toml, and why
    "tinysoundfont": "its declared pyaudio needs PortAudio headers: `make` installs it --no-deps from "
                     "requirements-nodeps.lock",
    "basic_pitch": "declares tensorflow, which its ONNX path does not use: --no-deps from requirements-nodeps.lock",
    "torchcrepe": "declares torch/torchaudio (pinned apart): --no-deps from requirements-nodeps.lock",
    "torchvggish": "declares torch (pinned apart); a test oracle: --no-deps from requirements-nodeps.lock",
}
OWN = {"mtmusicldm", "pipeline", "flows", "studio", "cli", "tests", "tiny_generation", "test_codec_dir", "fad_backbones",
       "test_loop"}


def _norm(name: str) -> str:
    return name.lower().replace("_", "-")


def _locked() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text().splitlines() + (
            ROOT / "requirements-nodeps.lock").read_text().splitlines():
        if "==" in line and not line.lstrip().startswith("#"):
            name, version = line.split("==", 1)
            pins[_norm(name.strip())] = Version(version.split(";")[0].strip())
    return pins


def test_ranges_admit_the_lock_and_the_torch_set_is_pinned() -> None:
    locked = _locked()
    for req in REQUIREMENTS:
        name = _norm(req.name)
        assert name in locked and locked[name] in req.specifier, f"{req} does not admit the locked {locked.get(name)}"
        operators = {spec.operator for spec in req.specifier}
        assert operators == ({"=="} if name in TORCH_SET else {"~="}), f"{req}: torch set exact, others ~="


def _third_party_imports() -> set[str]:
    names = set()
    for package in ("mtmusicldm", "pipeline", "flows", "studio", "cli", "tests", "benchmarks", "scripts"):
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in OWN}


def test_every_import_is_declared_and_every_declaration_used() -> None:
    declared = {_norm(r.name) for r in REQUIREMENTS}
    owners = md.packages_distributions()
    used = set()
    for module in sorted(_third_party_imports() - set(NOT_DECLARED)):
        dists = {_norm(d) for d in owners.get(module, [])}
        assert dists & declared, f"`import {module}` (distribution {sorted(dists)}) is not declared in pyproject.toml"
        used |= dists & declared
    assert declared - used == set(NOT_IMPORTED), f"declared but unused: {sorted(declared - used - set(NOT_IMPORTED))}"
    assert {_norm(m) for m in NOT_DECLARED} <= set(_locked()), "an undeclared import must be pinned in a lock file"


def test_console_script_and_version() -> None:
    assert PYPROJECT["project"]["scripts"] == {"mtmusicldm": "cli:main"} and callable(cli.main)
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "mtmusicldm.__version__"}
    assert Version(__version__) and "cli*" in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
