"""Synthetic band generator: Slakh layout, determinism, resumability and musical coherence."""
from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from mtmusicldm.audio.io import resample
from mtmusicldm.data.synthetic import SongPlan, generate_band_dataset, plan_song, render_band_track

ALL_ON = dict(extra_stem_prob=1.0, double_stem_prob=1.0, unrendered_prob=1.0)
SPLIT_SIZES = {"train": 2, "validation": 1, "test": 1}


def _gen(root: Path, sizes: dict[str, int] = SPLIT_SIZES, seed: int = 7, **kw) -> list[str]:
    return generate_band_dataset(root, sizes, seed=seed, min_seconds=2.0, max_seconds=3.0, **kw)


def _hashes(root: Path) -> dict[str, str]:
    """Relative path (without the split folder) -> sha256 of every file under root."""
    return {str(Path(*p.relative_to(root).parts[1:])): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def full_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("band")
    _gen(root, **ALL_ON)
    return root


def test_slakh_layout_and_metadata(full_ds: Path) -> None:
    dirs = sorted(full_ds.glob("*/Track*"))
    assert [(d.parent.name, d.name) for d in dirs] == [
        ("test", "Track00004"), ("train", "Track00001"), ("train", "Track00002"), ("validation", "Track00003")]
    for d in dirs:
        meta = yaml.safe_load((d / "metadata.yaml").read_text())
        assert {"UUID", "audio_dir", "midi_dir", "normalized", "overall_gain", "target_peak", "stems"} <= set(meta)
        assert meta["audio_dir"] == "stems"
        classes = [s["inst_class"] for s in meta["stems"].values()]
        assert len(classes) >= 6  # 4 core + a second guitar/piano + >= 1 extra (+ an unrendered one)
        assert {"Bass", "Drums", "Guitar", "Piano"} <= set(classes)
        assert set(classes) - {"Bass", "Drums", "Guitar", "Piano"}, "extra classes expected with prob 1"
        mix = np.zeros(0)
        for name, s in meta["stems"].items():
            path = d / "stems" / f"{name}.flac"
            if s["is_drum"]:
                assert (s["inst_class"], s["program_num"]) == ("Drums", 0)
            ranges = {"Bass": range(32, 40), "Guitar": range(24, 32), "Piano": range(8)}
            if s["inst_class"] in ranges:
                assert s["program_num"] in ranges[s["inst_class"]] and not s["is_drum"]
            if not s["audio_rendered"]:
                assert not path.exists()
                continue
            info = sf.info(str(path))
            assert (info.channels, info.samplerate, info.subtype) == (1, 44100, "PCM_16")
            wav, _ = sf.read(str(path))
            assert 0.0 < np.abs(wav).max() <= 0.9 + 1e-4
            mix = wav if mix.size == 0 else mix + wav
        assert sum(not s["audio_rendered"] for s in meta["stems"].values()) == 1
        written, _ = sf.read(str(d / "mix.flac"))
        np.testing.assert_allclose(written, np.clip(mix, -1, 1), atol=6 / 32768)
        assert 2.0 <= written.size / 44100 <= 3.0


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path, full_ds: Path) -> None:
    _gen(tmp_path / "a", **ALL_ON)
    assert _hashes(tmp_path / "a") == _hashes(full_ds)
    _gen(tmp_path / "b", seed=8, **ALL_ON)
    a, b = _hashes(full_ds), _hashes(tmp_path / "b")
    assert all(a[k] != b[k] for k in set(a) & set(b) if k.endswith("mix.flac"))


def test_track_k_independent_of_dataset_size(tmp_path: Path) -> None:
    _gen(tmp_path / "one", {"train": 1})
    _gen(tmp_path / "many", {"train": 3, "test": 2})
    one, many = _hashes(tmp_path / "one"), _hashes(tmp_path / "many")
    assert one and all(many[k] == v for k, v in one.items())
    # Track00002 moves from train to validation when the split sizes change; its content does not.
    _gen(tmp_path / "moved", {"train": 1, "validation": 1})
    moved = _hashes(tmp_path / "moved")
    assert {k: v for k, v in moved.items() if k.startswith("Track00002")} == \
        {k: v for k, v in many.items() if k.startswith("Track00002")}


def test_resume_after_deleted_track_and_stale_tmp(tmp_path: Path, full_ds: Path) -> None:
    root = tmp_path / "ds"
    shutil.copytree(full_ds, root)
    shutil.rmtree(root / "train" / "Track00002")
    (root / "train" / ".Track00002.tmp-deadbeef" / "stems").mkdir(parents=True)  # a killed run's leftover
    untouched = (root / "test" / "Track00004" / "mix.flac").stat().st_mtime_ns
    assert _gen(root, **ALL_ON) == ["Track00001", "Track00002", "Track00003", "Track00004"]
    assert _hashes(root) == _hashes(full_ds)
    assert not list((root / "train").glob(".*"))
    assert (root / "test" / "Track00004" / "mix.flac").stat().st_mtime_ns == untouched  # skipped, not rewritten


def test_changed_settings_regenerate_and_moved_ids_do_not_duplicate(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _gen(root, {"train": 2})
    before = _hashes(root)
    _gen(root, {"train": 2}, seed=99)
    assert _hashes(root)["Track00001/mix.flac"] != before["Track00001/mix.flac"]
    _gen(root, {"train": 1, "validation": 1}, seed=99)
    assert sorted(str(p.relative_to(root)) for p in root.glob("*/Track*")) == [
        "train/Track00001", "validation/Track00002"]


def test_bad_arguments(tmp_path: Path) -> None:
    for kw in ({"sizes": {"valid": 1}}, {"seed": -1}, {"dropout_prob": 1.5}):
        sizes = kw.pop("sizes", {"train": 1})
        with pytest.raises(ValueError):
            _gen(tmp_path, sizes, **kw)
    with pytest.raises(ValueError):
        generate_band_dataset(tmp_path, {"train": 1}, seed=0, min_seconds=3.0, max_seconds=2.0)
    foreign = tmp_path / "real" / "train" / "Track00001"
    foreign.mkdir(parents=True)
    (foreign / "metadata.yaml").write_text("UUID: x\nstems: {}\n")
    with pytest.raises(ValueError, match="refusing to overwrite"):
        _gen(tmp_path / "real", {"train": 1})
    assert (foreign / "metadata.yaml").read_text() == "UUID: x\nstems: {}\n"


def test_plan_is_deterministic_and_varied() -> None:
    plans = [plan_song(3, k, 2.0, 3.0) for k in range(1, 41)]
    assert plans == [plan_song(3, k, 2.0, 3.0) for k in range(1, 41)]
    assert all(70 <= p.tempo_bpm <= 170 and p.beats_per_bar in (3, 4) and 2 <= p.duration_s <= 3 for p in plans)
    assert {p.mode for p in plans} == {"major", "minor"} and {p.beats_per_bar for p in plans} == {3, 4}
    assert len({p.key for p in plans}) >= 8 and len({p.progression for p in plans}) >= 6


# ---------------------------------------------------------------------------------------------------- music
SR = 16000


def _stem(seed: int, index: int, family: str) -> tuple[SongPlan, np.ndarray]:
    track = render_band_track(seed, index, min_seconds=6.0, max_seconds=6.0, sample_rate=22050, dropout_prob=0.0)
    audio = next(s.audio for s in track.stems if s.family == family and s.audio is not None)
    return track.plan, resample(audio, 22050, SR).astype(np.float64)


def _bass_chroma(y: np.ndarray) -> np.ndarray:
    """Pitch-class energy of the 30-250 Hz band (bass fundamentals), from one long Hann-windowed FFT."""
    power = np.abs(np.fft.rfft(y * np.hanning(y.size))) ** 2
    f = np.fft.rfftfreq(y.size, 1 / SR)
    band = (f > 30) & (f < 250)
    pc = np.round(12 * np.log2(f[band] / 440) + 69).astype(int) % 12
    chroma = np.bincount(pc, weights=power[band], minlength=12)
    return chroma / chroma.sum()


@pytest.mark.parametrize("index", [1, 2, 3, 4])
def test_bass_plays_in_key_on_chord_tones(index: int) -> None:
    plan, bass = _stem(11, index, "bass")
    chroma = _bass_chroma(bass)
    in_key = chroma[list(plan.scale)].sum()
    tritone_away = chroma[[(p + 6) % 12 for p in plan.scale]].sum()
    chord_tones = {pc for bar in range(plan.n_bars) for pc in plan.chord(bar)}
    assert in_key > 0.8 and in_key > tritone_away + 0.1, (plan.describe(), np.round(chroma, 2))
    assert chroma[sorted(chord_tones)].sum() > 0.5  # mostly chord tones; walking lines add passing notes


def _onset_times(y: np.ndarray, hop: int = 160) -> np.ndarray:
    """Seconds of the peaks of a rectified log-energy-difference onset curve (10 ms frames)."""
    energy = np.square(y[: y.size // hop * hop]).reshape(-1, hop).sum(axis=1)
    flux = np.maximum(0.0, np.diff(np.log(energy + 1e-3 * energy.max())))
    peaks = (flux[1:-1] > flux[:-2]) & (flux[1:-1] >= flux[2:]) & (flux[1:-1] > 0.25 * flux.max())
    return (np.flatnonzero(peaks) + 2) * hop / SR


def _on_grid(onsets: np.ndarray, plan: SongPlan, tol: float = 0.025) -> float:
    """Fraction of onsets within `tol` s of the plan's 16th-note grid (swung 8ths included)."""
    grid = np.array([plan.time(bar, q / 4) for bar in range(plan.n_bars + 1)
                     for q in range(4 * plan.beats_per_bar)])
    return float(np.mean(np.abs(onsets[:, None] - grid[None, :]).min(axis=1) < tol))


@pytest.mark.parametrize("index", [1, 2, 3, 4])
def test_drum_onsets_follow_the_tempo(index: int) -> None:
    plan, drums = _stem(11, index, "drums")
    onsets = _onset_times(drums)
    assert onsets.size >= plan.n_bars
    assert _on_grid(onsets, plan) > 0.85, plan.describe()
    detuned = dataclasses.replace(plan, tempo_bpm=plan.tempo_bpm * 1.08)
    assert _on_grid(onsets, detuned) < _on_grid(onsets, plan) - 0.2  # the check can fail
