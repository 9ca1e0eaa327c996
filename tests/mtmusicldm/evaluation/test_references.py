"""Reference sets: partners from different songs, shuffled mixes built from the right stems, reuse and rebuild."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mtmusicldm.audio import load_audio, save_audio
from mtmusicldm.evaluation.references import shuffle_partners, write_shuffled

STEMS = ("bass", "drums", "guitar", "piano")
SR, N = 16000, 6


def test_partners_come_from_different_songs() -> None:
    tracks = ["t0", "t0", "t1", "t2", "t3", "t4"]
    p, distinct = shuffle_partners(tracks, 4, seed=0)
    assert distinct and p.shape == (6, 4) and (p[:, 0] == np.arange(6)).all()
    for row in p:
        assert len({tracks[j] for j in row}) == 4  # four different songs per item
    np.testing.assert_array_equal(p, shuffle_partners(tracks, 4, seed=0)[0])
    few, ok = shuffle_partners(["a", "a", "b"], 4, seed=1)  # fewer songs than stems: other items only
    assert not ok and all(i not in row[1:] for i, row in enumerate(few))
    with pytest.raises(ValueError, match="at least 2 items"):
        shuffle_partners(["a"], 2, seed=0)


def _samples(root: Path) -> dict:
    rng = np.random.default_rng(0)
    items = [f"{i:05d}_x" for i in range(N)]
    for it in items:
        for s in STEMS:
            save_audio(root / "target" / s / f"{it}.wav", (0.1 * rng.normal(size=SR // 4)).astype(np.float32), SR,
                       "FLOAT")
    return {"stems": list(STEMS), "sample_rate": SR, "sample": {"subtype": "FLOAT"},
            "items": [{"item": it, "track": f"T{i}"} for i, it in enumerate(items)]}


def test_shuffled_mixes_reuse_and_rebuild(tmp_path: Path) -> None:
    index = _samples(tmp_path / "samples")
    combos = {"BD": ["bass", "drums"]}
    folder, partners, distinct = write_shuffled(tmp_path / "samples", index, combos, tmp_path / "cache", seed=3)
    assert distinct and json.loads((folder / "done.json").read_text())["partners"] == partners.tolist()

    def target(i: int, s: str) -> np.ndarray:
        return load_audio(tmp_path / "samples" / "target" / s / f"{index['items'][i]['item']}.wav", SR)

    it, j = index["items"][2]["item"], int(partners[2, 1])
    total = sum(target(int(partners[2, k]), s) for k, s in enumerate(STEMS))
    np.testing.assert_allclose(load_audio(folder / "total" / "mix" / f"{it}.wav", SR), total, atol=1e-6)
    arranged = target(j, "bass") + target(j, "drums") + target(2, "guitar") + target(2, "piano")
    np.testing.assert_allclose(load_audio(folder / "arrange_BD" / "mix" / f"{it}.wav", SR), arranged, atol=1e-6)
    np.testing.assert_allclose(load_audio(folder / "arrange_BD" / "sum" / f"{it}.wav", SR),
                               target(j, "bass") + target(j, "drums"), atol=1e-6)
    stamp = (folder / "done.json").stat().st_mtime_ns
    again, *_ = write_shuffled(tmp_path / "samples", index, combos, tmp_path / "cache", seed=3)
    assert again == folder and (folder / "done.json").stat().st_mtime_ns == stamp  # reused
    save_audio(tmp_path / "samples" / "target" / "bass" / f"{it}.wav", np.zeros(SR // 4, np.float32), SR, "FLOAT")
    rebuilt, *_ = write_shuffled(tmp_path / "samples", index, combos, tmp_path / "cache", seed=3)
    assert rebuilt != folder and not folder.exists()  # a changed target: rebuilt, the stale set removed
