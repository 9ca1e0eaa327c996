"""`mtmusicldm params` / `profile`: --params before or after the command, profile names from profiles/."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import cli

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("where", ["before", "after"])
def test_params_flag_before_or_after_the_command(where: str, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["seed"] = 4242
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(raw))
    argv = ["--params", str(path), "params"] if where == "before" else ["params", "--params", str(path)]
    cli.main(argv)
    assert json.loads(capsys.readouterr().out)["seed"] == 4242


def test_profile_copies_a_named_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "params.yaml"
    cli.main(["profile", "paper", "--params", str(target)])
    assert target.read_text() == (ROOT / "profiles" / "paper.yaml").read_text()
    with pytest.raises(SystemExit):
        cli.main(["profile", "huge", "--params", str(target)])
    assert "invalid choice: 'huge' (choose from 'cpu-hour', 'embedded', 'paper')" in capsys.readouterr().err
