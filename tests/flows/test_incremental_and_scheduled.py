"""The whole chain on a tiny project, then incremental retraining and two scheduled evaluations."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.project_copy import make_project

pytestmark = pytest.mark.slow


def _git(repo, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def _latest_step(repo) -> int:
    return int((repo / "checkpoints" / "ldm" / "latest").read_text().strip().split("-")[-1])


def test_full_chain_incremental_retrain_and_scheduled_evaluation(prefect_harness, tmp_path, monkeypatch):
    from flows.end_to_end import end_to_end
    from flows.incremental import incremental_retrain
    from flows.scheduled_eval import HISTORY, evaluate_latest

    monkeypatch.setenv("MTMUSICLDM_NO_PROGRESS", "1")
    repo = make_project(tmp_path / "proj")
    end_to_end(repo=str(repo))
    fad = json.loads((repo / "metrics" / "fad.json").read_text())
    assert len(fad["table3"]["mixture"]) >= 14 and (repo / "reports" / "evaluation.md").is_file()
    assert _latest_step(repo) == 3
    codec_mtime = (repo / "models" / "codec" / "codec.json").stat().st_mtime_ns
    latents_mtime = (repo / "data" / "latents" / "latents.json").stat().st_mtime_ns

    # Two more steps, as a DVC experiment: only train -> sample -> evaluate rerun, training continues from step 3.
    params_file = repo / "params.yaml"
    params_file.write_text("# tiny project (comment kept by DVC)\n" + params_file.read_text())
    committed = _git(repo, "show", "HEAD:params.yaml")
    head = _git(repo, "rev-parse", "HEAD")
    out = incremental_retrain(repo=str(repo), extra_steps=2)
    assert out["overrides"] == {"train.steps": 5} and out["experiment"] in out["experiments"]
    # The branch and params.yaml in git are untouched; DVC applied the value to the workspace and recorded the run.
    assert _git(repo, "rev-parse", "HEAD") == head and _git(repo, "show", "HEAD:params.yaml") == committed
    assert yaml.safe_load(params_file.read_text())["train"]["steps"] == 5
    assert params_file.read_text().startswith("# tiny project (comment kept by DVC)")
    shown = json.loads(subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=repo,
                                      capture_output=True, text=True, check=True).stdout)
    runs = {r["name"]: r["data"]["params"]["params.yaml"]["data"] for b in shown for e in b["experiments"] or []
            for r in e["revs"]}
    assert runs[out["experiment"]]["train"]["steps"] == 5
    assert _latest_step(repo) == 5
    assert json.loads((repo / "models" / "ldm" / "config.json").read_text())["trained_steps"] == 5
    assert (repo / "models" / "codec" / "codec.json").stat().st_mtime_ns == codec_mtime
    assert (repo / "data" / "latents" / "latents.json").stat().st_mtime_ns == latents_mtime

    # Scheduled evaluation: each run appends to the history; the second is a DVC cache hit.
    first = evaluate_latest(repo=str(repo))
    metrics_mtime = (repo / "metrics" / "fad.json").stat().st_mtime_ns
    second = evaluate_latest(repo=str(repo))
    assert (repo / "metrics" / "fad.json").stat().st_mtime_ns == metrics_mtime
    lines = (repo / HISTORY).read_text().splitlines()
    assert len(lines) == 2 and first["trained_steps"] == second["trained_steps"] == 5
    assert first["metrics"] and first["model_sha256"] == second["model_sha256"]


def test_scheduled_deployment_is_constructible():
    from flows.scheduled_eval import evaluate_latest

    deployment = evaluate_latest.to_deployment(name="nightly-evaluation", cron="0 3 * * *")
    assert deployment.name == "nightly-evaluation"
    assert any("0 3 * * *" in str(s) for s in (deployment.schedules or []))
