"""One Prefect test harness per session (its start costs ~30 s); tiny project copies for flow runs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    os.environ["PREFECT_HOME"] = str(tmp_path_factory.mktemp("prefect_home"))
    from flows import _env  # noqa: F401
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield


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
