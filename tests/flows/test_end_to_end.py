"""The end-to-end flow on a tiny project: stages run as tasks, a failure stops the flow and a rerun resumes."""
from __future__ import annotations

import pytest
import yaml

from tests.project_copy import make_project

pytestmark = pytest.mark.slow


def test_flow_runs_stages_and_resumes_after_failure(prefect_harness, tmp_path, monkeypatch):
    from flows.end_to_end import end_to_end
    from flows.tasks import StageFailed
    from mtmusicldm.config import ParamsError

    monkeypatch.setenv("MTMUSICLDM_NO_PROGRESS", "1")
    repo = make_project(tmp_path / "proj")
    stages = ["download", "prepare"]
    md = end_to_end(repo=str(repo), stages=stages)
    assert "| train |" in md and (repo / "data" / "shards" / "report.json").is_file()

    # Break prepare (an invalid param): the flow refuses before `dvc repro`, which would first delete the
    # stage's outputs; download stays cached and the shards stay where they are.
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["prepare"]["samples_per_shard"] = 0
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    source = repo / "data" / "raw" / "source.json"
    before = source.stat().st_mtime_ns
    with pytest.raises(ParamsError, match="prepare.samples_per_shard"):
        end_to_end(repo=str(repo), stages=stages)
    assert source.stat().st_mtime_ns == before
    assert (repo / "data" / "shards" / "report.json").is_file()

    # Fix it: the rerun resumes at prepare.
    params["prepare"]["samples_per_shard"] = 3
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    end_to_end(repo=str(repo), stages=stages)
    assert source.stat().st_mtime_ns == before
    assert len(list((repo / "data" / "shards" / "train").glob("*.tar"))) > 1
    with pytest.raises(StageFailed, match="nosuchstage"):  # a failing `dvc repro` stops the flow with its error
        end_to_end(repo=str(repo), stages=["nosuchstage"])


def test_dvc_repro_task_unit(tmp_path):
    from flows.end_to_end import stage_names
    from flows.tasks import RETRIES

    repo = make_project(tmp_path / "p")
    assert stage_names(repo)[:2] == ["download", "prepare"]
    assert RETRIES["download"] >= 1
