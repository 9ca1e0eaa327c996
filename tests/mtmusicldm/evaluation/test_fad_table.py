"""FadTable: folder-to-folder FAD through the cache, halves, pairing by file name, intervals, errors."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

from mtmusicldm.audio import save_audio
from mtmusicldm.evaluation import FadTable, OfflineEmbedder, RankDeficientWarning, fad_from_embeddings

SR = 16000


def _folder(root: Path, n: int, seed: int, noise: float = 0.0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(2.0 * SR)) / SR
    for i in range(n):
        wav = 0.3 * np.sin(2 * np.pi * (180 + 23 * i) * t) * (1 + 0.5 * np.sin(2 * np.pi * (1 + i % 3) * t))
        save_audio(root / f"{i:03d}.wav", (wav + noise * rng.normal(size=t.shape)).astype(np.float32), SR)
    return root


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fadtable")
    return {"a": _folder(root / "a", 24, 0), "b": _folder(root / "b", 24, 0, noise=0.05),
            "noise": _folder(root / "noise", 24, 1, noise=0.5), "root": root}


def test_values_intervals_and_pairing(dirs: dict[str, Path]) -> None:
    table = FadTable(OfflineEmbedder(), dirs["root"] / "cache", n_boot=100, seed=0)
    same = table.fad(dirs["a"], dirs["a"], "same")
    assert same.value == pytest.approx(0.0, abs=1e-6) and same.paired and same.high < 1e-6
    near, far = table.fad(dirs["a"], dirs["b"], "near"), table.fad(dirs["a"], dirs["noise"], "far")
    assert near.paired and (near.n_a, near.n_b, near.frames_a) == (24, 24, 48)
    assert near.low <= near.value <= near.high and far.low <= far.value <= far.high
    assert near.high < far.low  # clearly different sets: intervals apart
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficientWarning)  # 48 frames, 80 dims (the table records it)
        want = fad_from_embeddings(table.embeddings(dirs["a"]).embeddings, table.embeddings(dirs["b"]).embeddings)
    assert near.value == pytest.approx(want) and "near" in table.rank_deficient
    halves = table.fad(dirs["a"], dirs["a"], "halves", part_a="even", part_b="odd")
    assert not halves.paired and (halves.n_a, halves.n_b) == (12, 12) and halves.value > 0
    assert set(near.as_dict()) == {"value", "low", "high", "n_a", "n_b"}
    again = FadTable(OfflineEmbedder(), dirs["root"] / "cache", n_boot=100, seed=0).fad(dirs["a"], dirs["b"], "near")
    assert again == near  # seeded resampling, cached embeddings
    assert FadTable(OfflineEmbedder(), n_boot=100, seed=1).fad(dirs["a"], dirs["b"], "near").low != near.low


def test_too_few_embeddings(dirs: dict[str, Path], tmp_path: Path) -> None:
    save_audio(tmp_path / "one" / "x.wav", np.zeros(SR // 2, np.float32), SR)
    table = FadTable(OfflineEmbedder(), n_boot=20)
    with pytest.raises(ValueError, match="need at least 2 embeddings"):
        table.fad(tmp_path / "one", dirs["a"], "one")
    assert table.fad(tmp_path / "one", dirs["a"], "one", required=False) is None and table.notes
    with pytest.raises(ValueError, match="n_boot"):
        FadTable(OfflineEmbedder(), n_boot=5)


def test_bad_files_are_skipped_with_a_reason(dirs: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    import soundfile as sf

    from mtmusicldm.audio import AudioError

    bad = tmp_path / "bad"
    shutil.copytree(dirs["a"], bad)
    wav = np.zeros(2 * SR, np.float32)
    wav[5] = np.nan
    sf.write(str(bad / "005.wav"), wav, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match="005.wav"):
        FadTable(OfflineEmbedder(), n_boot=20).fad(bad, dirs["a"], "strict")
    table = FadTable(OfflineEmbedder(), tmp_path / "cache", n_boot=20, skip_bad=True)
    row = table.fad(bad, dirs["a"], "lenient")
    assert (row.n_a, row.n_b, row.paired) == (23, 24, False)
    assert any("005.wav: skipped" in n and "NaN" in n for n in table.notes)
    again = FadTable(OfflineEmbedder(), tmp_path / "cache", n_boot=20, skip_bad=True)
    assert again.fad(bad, dirs["a"], "lenient").value == row.value and again.notes == table.notes  # from cache
    for f in bad.glob("*.wav"):
        sf.write(str(f), wav, SR, subtype="FLOAT")
    fresh = FadTable(OfflineEmbedder(), n_boot=20, skip_bad=True)
    assert fresh.fad(bad, dirs["a"], "all bad", required=False) is None and "all bad" in fresh.notes[-1]
