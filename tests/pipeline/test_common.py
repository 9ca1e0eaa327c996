"""Stage helpers: reading params files (YAML 1.2 booleans, YAML 1.1 numbers, keys written twice, one-line errors
naming the file) and the one-line stage entry points."""
from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mtmusicldm.config import ParamsError
from pipeline._common import PROFILES_DIR, load_params, read_params_yaml

ROOT = Path(__file__).resolve().parents[2]


def _with(tmp_path: Path, key: str, value: str) -> Path:
    """The embedded profile with the (first) line `key: ...` set to `key: value`, written as given."""
    text, n = re.subn(rf"^(\s*{key}:) *\S+", rf"\g<1> {value}", (PROFILES_DIR / "embedded.yaml").read_text(),
                      count=1, flags=re.M)
    assert n == 1
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


def test_only_true_and_false_are_booleans(tmp_path):
    path = _with(tmp_path, "mixed_precision", "no")
    assert load_params(path).train.mixed_precision == "no"
    assert read_params_yaml(path)["sample"]["total"] is True
    with pytest.raises(ParamsError, match=r"^params: codec\.whiten: Input should be a valid boolean, got 'yes' \(in "):
        load_params(_with(tmp_path, "whiten", "yes"))


def test_floats_without_a_dot_get_the_hint(tmp_path):
    with pytest.raises(ParamsError, match=r"codec\.lr: expected a number, got the string '2e-3' \(write floats"):
        load_params(_with(tmp_path, "lr", "2e-3"))


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="params file not found"):
        load_params(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("train: [unclosed\n")
    with pytest.raises(ParamsError, match=r"^params: <file>: .*bad\.yaml is not valid YAML") as e:
        load_params(tmp_path / "bad.yaml")
    assert "\n" not in str(e.value)  # one line


def test_a_key_written_twice_is_refused_naming_it_and_both_lines(tmp_path):
    lines = (PROFILES_DIR / "embedded.yaml").read_text().splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith("train:")) + 1
    lines.insert(at, "  lr: 5.0e-3")  # train.lr again: plain YAML would silently keep the last one
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    second = next(i for i, line in enumerate(lines) if line.startswith("  lr:") and i > at) + 1
    with pytest.raises(ParamsError, match=rf"^params: train\.lr: written twice in {path} "
                                          rf"\(lines {at + 1} and {second}\); keep one$"):
        load_params(path)
    path.write_text("seed: 1\nseed: 2\n")
    with pytest.raises(ParamsError, match=r"params: seed: written twice .*\(lines 1 and 2\)"):
        load_params(path)


def _stage_commands() -> list[list[str]]:
    """`python -m pipeline.<stage> ARGS` of every dvc.yaml stage, as [module, *ARGS]."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return [stage["cmd"].split()[2:] for stage in stages.values()]


@pytest.mark.parametrize("command", _stage_commands(), ids=lambda c: c[0])
def test_every_stage_entry_point_reports_bad_input_in_one_line(command, tmp_path):
    """Each stage of dvc.yaml, with its own arguments: a bad params file -> SystemExit with one line."""
    params = tmp_path / "params.yaml"
    params.write_text("seed: 1\nseed: 2\n")
    module, args = command[0], command[1:]
    args[args.index("--params") + 1] = str(params)
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(args)
    stage = module.rsplit(".", 1)[-1]
    assert str(e.value.code) == f"{stage}: params: seed: written twice in {params} (lines 1 and 2); keep one"


def test_stage_process_prints_one_line(tmp_path):
    """The real process (as `dvc repro` runs it): exit status 1 and a single line on stderr."""
    params = tmp_path / "params.yaml"
    raw = yaml.safe_load((PROFILES_DIR / "embedded.yaml").read_text())
    raw["prepare"]["samples_per_shard"] = 0
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "pipeline.prepare", "--params", str(params), "--out",
                           str(tmp_path / "shards")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"prepare: params: prepare.samples_per_shard: must be in [1, 100000], got 0 (in {params})"], proc.stderr
    assert not (tmp_path / "shards").exists()
