"""`dvc repro` on a copy of the project with tiny params: runs, caches, and reruns only what a param change affects."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.project_copy import make_project

pytestmark = pytest.mark.slow


def _dvc(repo: Path, *args: str) -> str:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
               MTMUSICLDM_NO_PROGRESS="1")
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    return make_project(tmp_path_factory.mktemp("repo"))


def test_repro_prepare_then_cache_hit_then_param_change(repo):
    out = _dvc(repo, "repro", "prepare")
    assert "Running stage 'download'" in out and "Running stage 'prepare'" in out
    report = repo / "data" / "shards" / "report.json"
    assert report.is_file() and (repo / "data" / "shards" / "test").is_dir()
    first = report.stat().st_mtime_ns

    out = _dvc(repo, "repro", "prepare")
    assert "Running stage" not in out
    assert report.stat().st_mtime_ns == first

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"]["samples_per_shard"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    source_mtime = (repo / "data" / "raw" / "source.json").stat().st_mtime_ns
    out = _dvc(repo, "repro", "prepare")
    assert "Running stage 'prepare'" in out and "Running stage 'download'" not in out
    assert (repo / "data" / "raw" / "source.json").stat().st_mtime_ns == source_mtime
    assert len(list((repo / "data" / "shards" / "train").glob("*.tar"))) > 1
