"""`mtmusicldm prepare`: a local MSDM-layout corpus through the command line, and params errors before any work."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

import cli
from mtmusicldm import STEMS
from mtmusicldm.data.shards import iter_samples, list_shards

ROOT = Path(__file__).resolve().parents[2]


def test_msdm_layout_via_cli(tmp_path, monkeypatch):
    """`mtmusicldm prepare --source msdm --root` on a hand-made 22.05 kHz stereo MSDM folder."""
    root = tmp_path / "msdm"
    for k, split in enumerate(("train", "validation", "test")):
        d = root / split / f"Track{k + 1:05d}"
        d.mkdir(parents=True)
        t = np.arange(22050 * 2) / 22050
        for i, stem in enumerate(STEMS):
            wav = 0.3 * np.sin(2 * np.pi * (110 * (i + 1)) * t)
            sf.write(d / f"{stem}.wav", np.stack([wav, wav], 1), 22050)  # stereo: mixed down
    params = tmp_path / "params.yaml"
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["audio"]["segment_samples"] = 10240
    raw["prepare"]["workers"] = 0
    params.write_text(yaml.safe_dump(raw))
    cli.main(["prepare", "--source", "msdm", "--root", str(root), "--out", str(tmp_path / "out"),
              "--params", str(params)])  # --params after the command works as before it
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["source"] == "msdm"
    assert report["splits"]["test"]["segments"] == 3  # 2 s at 16 kHz = 32000 samples = 3 x 10240
    smp = next(iter_samples(list_shards(tmp_path / "out" / "test"), STEMS))
    assert smp.meta["source_sample_rate"] == 22050 and smp.audio.shape == (4, 10240)


def test_params_error_before_any_work(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text((ROOT / "params.yaml").read_text()
                      .replace("train_views: 2", "train_views: -1"))
    with pytest.raises(SystemExit, match="prepare.train_views"):
        cli.main(["--params", str(params), "prepare", "--source", "synthetic", "--raw", str(tmp_path / "raw"),
                  "--out", str(tmp_path / "out")])
    assert not (tmp_path / "raw").exists() and not (tmp_path / "out").exists()
