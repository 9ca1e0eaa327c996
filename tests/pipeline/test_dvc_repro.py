"""`dvc repro` on a copy of the project with tiny params: runs, caches, and reruns only what a param change affects."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _dvc(repo: Path, *args: str) -> str:
    env = dict(os.environ, PATH=str(Path(sys.executable).parent) + os.pathsep + os.environ["PATH"],
               MTMUSICLDM_NO_PROGRESS="1")
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    repo = tmp_path_factory.mktemp("repo")
    for name in ("mtmusicldm", "pipeline", "profiles"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", repo / "dvc.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["audio"]["segment_samples"] = 10240
    raw["synthetic"].update(tracks={"train": 2, "validation": 1, "test": 1}, min_seconds=2.0, max_seconds=3.0)
    raw["prepare"]["workers"] = 0
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    _dvc(repo, "init", "-q")
    _dvc(repo, "config", "core.analytics", "false")
    return repo


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
