"""`mtmusicldm fad DIR_A DIR_B`: the value, --json, the cache and every error path."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
import torch

import cli
from mtmusicldm.audio import save_audio

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

SR = 16000


def tones(folder: Path, base: float, n: int = 4, seconds: float = 2.0, noise: float = 0.0) -> Path:
    """n files of harmonic tones (2 offline-backbone blocks each for 2 s), optionally with white noise."""
    rng = np.random.default_rng(int(base))
    t = np.arange(int(seconds * SR)) / SR
    for i in range(n):
        wav = 0.3 * np.sin(2 * np.pi * base * (1 + i / 7) * t) + noise * rng.standard_normal(t.shape)
        save_audio(folder / f"{i:02d}.wav", wav.astype(np.float32), SR, subtype="PCM_16")
    return folder


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fad")
    return {"a": tones(root / "a", 220.0), "a2": tones(root / "a2", 220.0), "noise": tones(root / "noise", 220.0,
                                                                                                noise=0.5),
            "root": root}


def _run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[str, str]:
    cli.main(["fad", *map(str, argv)])
    out = capsys.readouterr()
    return out.out, out.err


def test_fad_prints_a_float(dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out, err = _run(capsys, dirs["a"], dirs["a2"])
    assert float(out.strip()) < 1e-6  # the same audio in both folders
    assert "offline backbone: not comparable with published VGGish FAD" in err and "rank-deficient" in err
    out, _ = _run(capsys, dirs["a"], dirs["noise"])
    assert float(out.strip()) > 1.0


def test_fad_json_and_cache(dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    cache = dirs["root"] / "cache"
    out, _ = _run(capsys, dirs["a"], dirs["noise"], "--json", "--cache", cache)
    record = json.loads(out)
    assert record["backbone"] == "offline" and record["comparable_to_paper"] is False
    assert record["files_a"] == record["files_b"] == 4 and record["embeddings_a"] == 8
    assert record["rank_deficient"] is True and record["fad"] > 1.0
    assert len(list(cache.glob("*.npz"))) == 2
    again = json.loads(_run(capsys, dirs["a"], dirs["noise"], "--json", "--cache", cache)[0])
    assert again["fad"] == record["fad"]


def test_fad_errors(dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    root = dirs["root"]
    (root / "empty").mkdir()
    with pytest.raises(SystemExit, match="mtmusicldm fad: .*no audio files"):
        _run(capsys, dirs["a"], root / "empty")
    with pytest.raises(SystemExit, match="is not a folder"):
        _run(capsys, dirs["a"], root / "missing")
    short = tones(root / "short", 110.0, n=1, seconds=0.5)  # one file, one block: one embedding
    with pytest.raises(SystemExit, match="need at least 2 embeddings"):
        _run(capsys, dirs["a"], short)
    bad = root / "nan"
    bad.mkdir()
    wav = np.zeros(SR, np.float32)
    wav[100] = np.nan
    sf.write(str(bad / "x.wav"), wav, SR, subtype="FLOAT")
    with pytest.raises(SystemExit, match=r"x\.wav"):
        _run(capsys, dirs["a"], bad)
    capsys.readouterr()
    with pytest.raises(SystemExit):  # argparse: choices come from the EMBEDDERS registry
        _run(capsys, dirs["a"], dirs["a2"], "--backbone", "nope")
    assert "invalid choice: 'nope'" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="needs --vggish-weights"):
        _run(capsys, dirs["a"], dirs["a2"], "--backbone", "vggish")
    with pytest.raises(SystemExit, match="only used with --backbone vggish"):
        _run(capsys, dirs["a"], dirs["a2"], "--vggish-weights", root / "w.pth")


def test_fad_crepe_backbone_with_interval(dirs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    out, err = _run(capsys, dirs["a"], dirs["noise"], "--backbone", "crepe", "--json")
    record = json.loads(out)
    assert record["backbone"] == "crepe" and record["embedding_dim"] == 32 and record["comparable_to_paper"] is False
    assert record["ci95"][0] <= record["fad"] <= record["ci95"][1] and record["fad"] > 0
    assert "crepe backbone: not comparable with published VGGish FAD" in err and "95 % interval" in err
