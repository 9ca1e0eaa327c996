"""Reading params files: YAML 1.2 booleans, YAML 1.1 numbers, one-line errors naming the file."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from mtmusicldm.config import ParamsError
from pipeline._common import PROFILES_DIR, load_params, read_params_yaml


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
    with pytest.raises(ParamsError, match=r"^params: <file>: .*bad\.yaml is not valid YAML"):
        load_params(tmp_path / "bad.yaml")
