"""Slakh-family readers: redux / synthetic, MSDM and BabySlakh layouts, bad tracks and missing-stem policies."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

from mtmusicldm import STEMS
from mtmusicldm.audio.io import AudioError, load_audio
from mtmusicldm.data.slakh import (
    TrackError,
    TrackSource,
    babyslakh_split,
    classify_stem,
    load_track,
    scan_babyslakh,
    scan_msdm,
    scan_slakh_redux,
    scan_source,
)
from mtmusicldm.data.synthetic import BandSettings, generate_band_dataset

PROGRAM = {"bass": 33, "guitar": 27, "piano": 0}
FREQ = {"bass": 55.0, "drums": 80.0, "guitar": 196.0, "piano": 262.0}


def _tone(freq: float, seconds: float, sr: int, amp: float = 0.3) -> np.ndarray:
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def _entry(stem: str, program: int | None = None, rendered: bool = True, inst_class: str | None = None) -> dict:
    drum = stem == "drums"
    program = 0 if drum else PROGRAM[stem] if program is None else program
    return {"audio_rendered": rendered, "is_drum": drum, "program_num": program,
            "inst_class": inst_class or stem.capitalize(), "midi_program_name": "x", "plugin_name": "x.nkm"}


def _track(root: Path, split: str, tid: str, stems: dict[str, tuple[dict, np.ndarray | None, int]],
           suffix: str = ".flac") -> Path:
    """Write a Slakh-style track: stems = {"S00": (metadata entry, audio [T] or [T, C] or None, rate)}."""
    d = root / split / tid if split else root / tid
    (d / "stems").mkdir(parents=True)
    for name, (_, audio, sr) in stems.items():
        if audio is not None:
            sf.write(str(d / "stems" / f"{name}{suffix}"), audio, sr, subtype="PCM_16")
    meta = {"UUID": "0" * 32, "audio_dir": "stems", "midi_dir": "MIDI", "normalized": True, "overall_gain": 1.0,
            "target_peak": -1.0, "stems": {k: v[0] for k, v in stems.items()}}
    (d / "metadata.yaml").write_text(yaml.safe_dump(meta))
    return d


def _four(seconds: float = 2.0, sr: int = 44100) -> dict[str, tuple[dict, np.ndarray, int]]:
    return {f"S0{i}": (_entry(s), _tone(FREQ[s], seconds, sr), sr) for i, s in enumerate(STEMS)}


def _only(sources: list[TrackSource], tid: str) -> TrackSource:
    (src,) = [s for s in sources if s.track_id == tid]
    return src


# ---------------------------------------------------------------------------------------------------- synthetic
@pytest.fixture(scope="module")
def band(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("band")
    settings = BandSettings(seed=5, min_seconds=2.0, max_seconds=3.0, extra_stem_prob=1.0, double_stem_prob=1.0,
                            unrendered_prob=1.0)  # the default renderer: SoundFont, as in `make run`
    generate_band_dataset(root, {"train": 2, "validation": 1, "test": 1}, settings)
    return root


def test_synthetic_dataset_scans_and_loads(band: Path) -> None:
    sources, skipped = scan_source("synthetic", band)
    assert skipped == [] and [s.track_id for s in sources] == [f"Track0000{k}" for k in (1, 2, 3, 4)]
    assert [s.split for s in sources] == ["train", "train", "validation", "test"]
    for src in sources:
        meta = yaml.safe_load((band / src.split / src.track_id / "metadata.yaml").read_text())["stems"]
        used = {p.stem: stem for stem, files in src.stem_files.items() for p in files}
        for name, entry in meta.items():
            rendered = (band / src.split / src.track_id / "stems" / f"{name}.flac").exists()
            assert used.get(name) == (classify_stem(entry) if rendered else None), (src.track_id, name)
        assert max(len(f) for f in src.stem_files.values()) == 2  # the doubled guitar or piano class
        track = load_track(src)
        assert track.audio.shape[0] == 4 and track.audio.dtype == np.float32
        assert 2.0 * 16000 <= track.audio.shape[1] <= 3.0 * 16000 + 1 and track.source_sample_rate == 44100
        for i, stem in enumerate(STEMS):
            expected = sum(load_audio(p, 16000) for p in src.stem_files[stem])
            np.testing.assert_array_equal(track.audio[i, : expected.size], expected)
        assert not any(track.silent)


# ---------------------------------------------------------------------------------------------------- redux
def test_extra_classes_ignored_doubles_summed_unrendered_skipped(tmp_path: Path) -> None:
    stems = _four()
    stems["S04"] = (_entry("piano", 48, inst_class="Strings"), _tone(1000.0, 2.0, 44100, amp=0.9), 44100)
    stems["S05"] = (_entry("piano", 1, rendered=False), None, 44100)           # Slakh: not rendered, no file
    stems["S06"] = (_entry("guitar", 29), None, 44100)                         # rendered but missing on disk
    stems["S07"] = (_entry("guitar", 25), _tone(330.0, 2.0, 44100), 44100)     # second guitar: summed
    stems["S08"] = (_entry("guitar", 0, inst_class="Drums") | {"is_drum": True}, _tone(90.0, 2.0, 44100), 44100)
    d = _track(tmp_path, "train", "Track00001", stems)
    (src,), skipped = scan_slakh_redux(tmp_path)
    assert skipped == []
    assert {k: [p.name for p in v] for k, v in src.stem_files.items()} == {
        "bass": ["S00.flac"], "drums": ["S01.flac", "S08.flac"], "guitar": ["S02.flac", "S07.flac"],
        "piano": ["S03.flac"]}
    assert any("S05" in n and "audio_rendered" in n for n in src.notes)
    assert any("S06" in n and "no audio file" in n for n in src.notes)
    track = load_track(src)
    guitar = load_audio(d / "stems" / "S02.flac", 16000) + load_audio(d / "stems" / "S07.flac", 16000)
    np.testing.assert_array_equal(track.audio[2], guitar)
    np.testing.assert_array_equal(track.audio[3], load_audio(d / "stems" / "S03.flac", 16000))
    probe = np.exp(-2j * np.pi * 1000.0 * np.arange(track.audio.shape[1]) / 16000)
    strings_level = np.abs(track.audio @ probe) / track.audio.shape[1]
    assert strings_level.max() < 1e-3  # the loud 0.9-amplitude 1 kHz Strings stem is in no stem


def test_metadata_problems_are_reported(tmp_path: Path) -> None:
    _track(tmp_path, "train", "Track00001", _four())
    (tmp_path / "train" / "Track00002" / "stems").mkdir(parents=True)                    # no metadata.yaml
    bad = _track(tmp_path, "train", "Track00003", _four())
    (bad / "metadata.yaml").write_text("stems: {S00: [unclosed\n")
    nostems = _track(tmp_path, "validation", "Track00004", _four())
    (nostems / "metadata.yaml").write_text("UUID: abc\n")
    (tmp_path / "train" / ".Track00005.tmp-1234").mkdir()                              # a killed write
    _track(tmp_path, "omitted", "Track00006", _four())
    sources, skipped = scan_slakh_redux(tmp_path)
    assert [s.track_id for s in sources] == ["Track00001"]
    reasons = {s.track_id: s.reason for s in skipped}
    assert reasons["Track00002"] == "missing metadata.yaml"
    assert reasons["Track00003"].startswith("unparsable metadata.yaml")
    assert "no 'stems' mapping" in reasons["Track00004"] and set(reasons) == {"Track00002", "Track00003",
                                                                                "Track00004"}
    sources, _ = scan_slakh_redux(tmp_path, splits=("train", "omitted"))
    assert [(s.split, s.track_id) for s in sources] == [("train", "Track00001"), ("omitted", "Track00006")]


def test_missing_stem_policy_drop_vs_silent(tmp_path: Path) -> None:
    stems = _four()
    stems["S03"] = (_entry("piano", 2, rendered=False), None, 44100)
    _track(tmp_path, "test", "Track00001", stems)
    sources, skipped = scan_slakh_redux(tmp_path, missing_stem_policy="drop")
    assert sources == [] and skipped[0].reason.startswith("no piano stem") and skipped[0].split == "test"
    (src,), skipped = scan_slakh_redux(tmp_path, missing_stem_policy="silent")
    assert skipped == [] and src.stem_files["piano"] == []
    track = load_track(src)
    assert track.silent == [False, False, False, True] and not track.audio[3].any() and track.audio[0].any()
    with pytest.raises(ValueError, match="missing_stem_policy"):
        scan_slakh_redux(tmp_path, missing_stem_policy="zeros")  # type: ignore[arg-type]


@pytest.mark.parametrize("damage", ["garbage", "truncated", "zero_length"])
def test_broken_audio_raises_track_error(tmp_path: Path, damage: str) -> None:
    d = _track(tmp_path, "train", "Track00042", _four(seconds=3.0))
    path = d / "stems" / "S01.flac"
    data = path.read_bytes()
    path.write_bytes({"garbage": bytes(range(256)) * 64, "truncated": data[: len(data) * 2 // 5],
                      "zero_length": b""}[damage])
    (src,), _ = scan_slakh_redux(tmp_path)
    with pytest.raises(TrackError, match=r"Track00042: drums file S01\.flac") as err:
        load_track(src)
    assert isinstance(err.value.__cause__, AudioError) and err.value.track_id == "Track00042"


def test_stereo_48k_and_unequal_lengths(tmp_path: Path) -> None:
    stems = _four(seconds=2.0)
    stereo = np.stack([_tone(55.0, 2.0, 48000), _tone(55.0, 2.0, 48000, amp=0.1)], axis=1)
    stems["S00"] = (_entry("bass"), stereo, 48000)
    stems["S01"] = (_entry("drums"), _tone(80.0, 2.5, 44100), 44100)
    _track(tmp_path, "train", "Track00001", stems)
    track = load_track(scan_slakh_redux(tmp_path)[0][0])
    assert track.audio.shape == (4, 40000)
    np.testing.assert_allclose(track.audio[0, 1000:31000], _tone(55.0, 2.0, 16000, amp=0.2)[1000:31000],
                               atol=2e-3)  # mean mixdown of 0.3 and 0.1, resampled 48k -> 16k
    assert not track.audio[[0, 2, 3], 32000:].any() and track.audio[1, 32000:].any()  # zero-padded to 2.5 s
    assert any("lengths differ" in n for n in track.notes)
    assert any("different sample rates" in n for n in track.notes)


def test_silence_threshold(tmp_path: Path) -> None:
    stems = _four()
    stems["S02"] = (_entry("guitar"), _tone(196.0, 2.0, 44100, amp=3e-4), 44100)  # about -73 dBFS RMS
    _track(tmp_path, "train", "Track00001", stems)
    (src,), _ = scan_slakh_redux(tmp_path)
    assert load_track(src).silent == [False, False, True, False]
    assert load_track(src, silence_db=-90.0).silent == [False] * 4


# ---------------------------------------------------------------------------------------------------- msdm
def test_msdm_layout(tmp_path: Path) -> None:
    for split, tid, stems in [("train", "Track00001", STEMS), ("test", "Track00002", STEMS[:3])]:
        d = tmp_path / split / tid
        d.mkdir(parents=True)
        for s in stems:
            sf.write(str(d / f"{s}.wav"), _tone(FREQ[s], 2.0, 22050), 22050)
    sources, skipped = scan_msdm(tmp_path)
    assert [s.track_id for s in sources] == ["Track00001"] and sources[0].source_layout == "msdm"
    assert [(s.track_id, s.reason) for s in skipped] == [("Track00002", "no piano stem")]
    sources, skipped = scan_source("msdm", tmp_path, missing_stem_policy="silent")
    assert [s.track_id for s in sources] == ["Track00001", "Track00002"] and skipped == []
    track = load_track(sources[1])
    assert track.audio.shape == (4, 32000) and track.source_sample_rate == 22050
    assert track.silent == [False, False, False, True]


# ---------------------------------------------------------------------------------------------------- babyslakh
def test_babyslakh_layout_and_deterministic_splits(tmp_path: Path) -> None:
    base = tmp_path / "babyslakh_16k"
    for k in range(1, 7):
        _track(base, "", f"Track{k:05d}", _four(seconds=1.0, sr=16000), suffix=".wav")
    kw = {"validation_fraction": 0.3, "test_fraction": 0.3}
    sources, skipped = scan_babyslakh(tmp_path, **kw)
    assert skipped == [] and len(sources) == 6 and {s.source_layout for s in sources} == {"babyslakh"}
    assert all(s.split == babyslakh_split(s.track_id, **kw) for s in sources)
    assert len({s.split for s in sources}) >= 2
    _track(base, "", "Track00007", _four(seconds=1.0, sr=16000), suffix=".wav")
    again = {s.track_id: s.split for s in scan_source("babyslakh", base, **kw)[0]}
    assert all(again[s.track_id] == s.split for s in sources) and len(again) == 7
    only_test, _ = scan_babyslakh(tmp_path, splits=("test",), **kw)
    assert {s.track_id for s in only_test} == {t for t, s in again.items() if s == "test"}
    track = load_track(sources[0])
    assert track.audio.shape == (4, 16000) and track.source_sample_rate == 16000
    splits = [babyslakh_split(f"Track{k:05d}") for k in range(4000)]
    assert abs(splits.count("test") / 4000 - 0.1) < 0.02 and abs(splits.count("validation") / 4000 - 0.1) < 0.02


def test_registry_and_root_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown source kind"):
        scan_source("musdb", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError):
        scan_slakh_redux(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="split folders"):
        scan_msdm(tmp_path)
    with pytest.raises(FileNotFoundError):
        scan_babyslakh(tmp_path)
    assert classify_stem({"is_drum": True, "program_num": 0}) == "drums"
    assert classify_stem({"is_drum": False, "program_num": 0}) == "piano"
    assert [classify_stem({"is_drum": False, "program_num": p}) for p in (7, 8, 24, 31, 32, 39, 40, 48)] == [
        "piano", None, "guitar", "guitar", "bass", "bass", None, None]
