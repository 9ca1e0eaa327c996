"""The incremental flow's parts that need no pipeline run: override checks, the `-S` grammar, refusal before work."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.project_copy import make_project

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("value", [5, 0, "/data/slakh v2", "it's", "back\\slash", "end\\", "q\\'x", "=,[]{}:",
                                   "null", "1e-4", "true", " lead", "ümlaut", '"dq"'])
def test_set_param_values_reach_params_yaml_exactly(tmp_path, value):
    """Oracle: DVC's own `-S` implementation (Hydra overrides) writes back exactly the value we validated."""
    from dvc.utils.hydra import apply_overrides

    from flows.tasks import hydra_literal

    path = tmp_path / "params.yaml"
    path.write_text("data:\n  local_root: null  # a comment\n")
    apply_overrides(path, [f"data.local_root={hydra_literal(value)}"])
    assert yaml.safe_load(path.read_text())["data"]["local_root"] == value


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/paper.yaml"])
def test_stages_read_the_same_params_after_dvcs_rewrite(tmp_path, profile):
    """`-S` rewrites the whole file as YAML 1.2, dropping the quotes of "no"/"off" (treeverse/dvc#11018)."""
    from dvc.utils.hydra import apply_overrides

    from pipeline._common import load_params

    raw = yaml.safe_load((ROOT / profile).read_text())
    raw["evaluate"]["notes"] = "off"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    before = load_params(path)
    apply_overrides(path, ["train.steps=7"])
    assert "notes: off" in path.read_text()  # unquoted: YAML 1.1 would read False
    assert load_params(path) == before.replace(train=before.train.replace(steps=7))


def test_unsupported_set_param_values_are_refused():
    from flows.tasks import hydra_literal

    with pytest.raises(ValueError, match="cannot be passed"):
        hydra_literal("/data/${HOME}")
    with pytest.raises(TypeError):
        hydra_literal(True)


def test_overrides_are_validated_with_the_whole_file(tmp_path):
    from flows.incremental import params_with_overrides
    from mtmusicldm.config import ParamsError

    repo = make_project(tmp_path / "p")
    params = repo / "params.yaml"
    before = params.read_text()
    assert params_with_overrides(params, {"train.steps": 7, "data.local_root": "/x"}).train.steps == 7
    with pytest.raises(ParamsError, match=r"^params: train\.steps: must be >= 1, got 0 \(in .*params\.yaml with "
                                          r"train\.steps=0\)$"):
        params_with_overrides(params, {"train.steps": 0})
    for key in ("train.nope", "nope.steps", "train.steps.deeper"):
        with pytest.raises(ParamsError, match=f"^params: {key}: no such key"):
            params_with_overrides(params, {key: 1})
    assert params.read_text() == before


def test_invalid_params_stop_the_flow_before_any_work(tmp_path):
    from flows.incremental import incremental_retrain
    from mtmusicldm.config import ParamsError

    repo = make_project(tmp_path / "p")
    params = repo / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["sample"]["steps"] = 0
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    before = params.read_text()
    with pytest.raises(ParamsError, match="sample.steps"):
        incremental_retrain.fn(repo=str(repo), extra_steps=2)
    with pytest.raises(ValueError, match="extra_steps"):
        incremental_retrain.fn(repo=str(repo), extra_steps=-1)
    refs = subprocess.run(["git", "for-each-ref", "refs/exps"], cwd=repo, capture_output=True, text=True, check=True)
    assert params.read_text() == before and refs.stdout == "" and not (repo / "dvc.lock").exists()
