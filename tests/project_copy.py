"""A copy of the project with tiny params, as a fresh git + DVC repo, for stage and flow tests."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def make_project(dest: Path, *, mutate=None) -> Path:
    """Copy the project (code, dvc.yaml, tiny params) into `dest` as a fresh git + DVC repo."""
    for name in ("mtmusicldm", "pipeline", "profiles", "flows"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", dest / "dvc.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["audio"]["segment_samples"] = 10240
    raw["synthetic"].update(tracks={"train": 2, "validation": 1, "test": 1}, min_seconds=2.0, max_seconds=3.0)
    raw["prepare"]["workers"] = 0
    if mutate is not None:
        mutate(raw)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=dest, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "config", "core.analytics", "false"], cwd=dest, check=True)
    return dest
