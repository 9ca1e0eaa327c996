"""The band corpus: Slakh layout with MIDI, SoundFont rendering, determinism, resumability, bad SoundFonts, music."""
from __future__ import annotations

import dataclasses
import hashlib
import shutil
import struct
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import soundfile as sf
import yaml

from mtmusicldm.audio.io import resample
from mtmusicldm.data.composer import band_rng, compose_part, plan_song, stem_layout
from mtmusicldm.data.gm import DRUM_KITS
from mtmusicldm.data.soundfont import SoundFontError, default_soundfont_path, load_soundfont, render_notes
from mtmusicldm.data.synthetic import MIDI_RESOLUTION, BandSettings, SongPlan, generate_band_dataset, render_band_track

ALL_ON = dict(extra_stem_prob=1.0, double_stem_prob=1.0, unrendered_prob=1.0)
SPLIT_SIZES = {"train": 2, "validation": 1, "test": 1}
RANGES = {"Bass": range(32, 40), "Guitar": range(24, 32), "Piano": range(8)}


def _settings(seed: int = 7, **kw) -> BandSettings:
    return BandSettings(seed=seed, min_seconds=2.0, max_seconds=3.0, **kw)


def _gen(root: Path, sizes: dict[str, int] = SPLIT_SIZES, seed: int = 7, **kw) -> list[str]:
    return generate_band_dataset(root, sizes, _settings(seed, **kw))


def _hashes(root: Path) -> dict[str, str]:
    """Relative path (without the split folder) -> sha256 of every file under root."""
    return {str(Path(*p.relative_to(root).parts[1:])): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _sf2_without(dst: Path, missing: set[tuple[int, int]]) -> Path:
    """A copy of the default SoundFont whose presets `(bank, program)` in `missing` are moved to bank 99."""
    data = bytearray(default_soundfont_path().read_bytes())
    at = data.index(b"phdr")
    size = struct.unpack_from("<I", data, at + 4)[0]
    for rec in range(at + 8, at + 8 + size, 38):  # sfPresetHeader: name[20], preset, bank, bag, lib, genre, morph
        preset, bank = struct.unpack_from("<HH", data, rec + 20)
        if (bank, preset) in missing:
            struct.pack_into("<H", data, rec + 22, 99)
    dst.write_bytes(bytes(data))
    return dst


@pytest.fixture(scope="module")
def full_ds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("band")
    _gen(root, **ALL_ON)
    return root


# ---------------------------------------------------------------------------------------------------- layout
def test_slakh_layout_metadata_and_midi(full_ds: Path) -> None:
    dirs = sorted(full_ds.glob("*/Track*"))
    assert [(d.parent.name, d.name) for d in dirs] == [
        ("test", "Track00004"), ("train", "Track00001"), ("train", "Track00002"), ("validation", "Track00003")]
    presets = set(load_soundfont().presets.values())
    for d in dirs:
        meta = yaml.safe_load((d / "metadata.yaml").read_text())
        assert {"UUID", "audio_dir", "midi_dir", "normalized", "overall_gain", "target_peak", "stems"} <= set(meta)
        assert (meta["audio_dir"], meta["midi_dir"]) == ("stems", "MIDI")
        assert meta["synthetic"]["renderer"] == "soundfont" and meta["synthetic"]["soundfont"] == "TimGM6mb.sf2"
        classes = [s["inst_class"] for s in meta["stems"].values()]
        assert len(classes) >= 6  # 4 core + a second guitar/piano + >= 1 extra (+ an unrendered one)
        assert {"Bass", "Drums", "Guitar", "Piano"} <= set(classes)
        assert set(classes) - {"Bass", "Drums", "Guitar", "Piano"}, "extra classes expected with prob 1"
        all_src = pretty_midi.PrettyMIDI(str(d / "all_src.mid"))
        assert len(all_src.instruments) == len(meta["stems"])
        mix = np.zeros(0)
        for i, (name, s) in enumerate(sorted(meta["stems"].items())):
            assert s["midi_saved"] is True and s["plugin_name"] in presets and "preset_fallback" not in s
            midi = pretty_midi.PrettyMIDI(str(d / "MIDI" / f"{name}.mid"))
            (inst,) = midi.instruments
            assert (inst.program, inst.is_drum) == (s["program_num"], s["is_drum"])
            assert [(n.start, n.end, n.pitch, n.velocity) for n in inst.notes] == \
                [(n.start, n.end, n.pitch, n.velocity) for n in all_src.instruments[i].notes]
            assert inst.notes, "every stem plays something"
            if s["is_drum"]:
                assert s["inst_class"] == "Drums" and s["program_num"] in DRUM_KITS
            if s["inst_class"] in RANGES:
                assert s["program_num"] in RANGES[s["inst_class"]] and not s["is_drum"]
            path = d / "stems" / f"{name}.flac"
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


def test_midi_holds_the_composed_notes(full_ds: Path) -> None:
    """MIDI/SXX.mid parses back to the composer's notes: pitch, velocity, onset to half a tick, legato cut."""
    settings, k = _settings(**ALL_ON), 2
    plan = plan_song(settings.seed, k, settings.min_seconds, settings.max_seconds)
    layout = stem_layout(band_rng(settings.seed, k, 1), programs=settings.programs, extra_stem_prob=1.0,
                         double_stem_prob=1.0, unrendered_prob=1.0)
    half_tick = 0.5 * 60.0 / (plan.tempo_bpm * MIDI_RESOLUTION) + 1e-6
    for i, slot in enumerate(layout):
        composed = sorted(compose_part(plan, slot.family, slot.style, band_rng(settings.seed, k, 10 + slot.slot),
                                       settings.dropout_prob), key=lambda n: (n.onset, n.pitch))
        (inst,) = pretty_midi.PrettyMIDI(str(full_ds / "train" / f"Track{k:05d}" / "MIDI" / f"S{i:02d}.mid")).instruments
        notes = sorted(inst.notes, key=lambda n: (n.start, n.pitch))
        assert [n.pitch for n in notes] == [c.pitch for c in composed]
        assert [n.velocity for n in notes] == [int(np.clip(round(c.vel * 127), 1, 127)) for c in composed]
        np.testing.assert_allclose([n.start for n in notes], [c.onset for c in composed], atol=half_tick)
        ends = np.array([n.end for n in notes])
        assert np.all(ends <= np.array([c.onset + max(c.dur, 0.01) for c in composed]) + half_tick)
        for p in {n.pitch for n in notes}:  # notes of one pitch never overlap (a note-off would cut the next)
            same = [n for n in notes if n.pitch == p]
            assert all(a.end <= b.start + 1e-9 for a, b in zip(same, same[1:]))


def test_audio_is_the_midi_played_through_the_named_preset(full_ds: Path) -> None:
    sfont = load_soundfont()
    d = full_ds / "train" / "Track00001"
    meta = yaml.safe_load((d / "metadata.yaml").read_text())
    checked = 0
    for name, s in meta["stems"].items():
        if not s["audio_rendered"]:
            continue
        wav, sr = sf.read(str(d / "stems" / f"{name}.flac"))
        (inst,) = pretty_midi.PrettyMIDI(str(d / "MIDI" / f"{name}.mid")).instruments
        ref = render_notes(sfont, inst.notes, program=s["program_num"], is_drum=s["is_drum"], sample_rate=sr,
                           n_samples=wav.size).astype(np.float64)
        gain = float(wav @ ref / (ref @ ref))
        assert gain > 0 and np.abs(wav - gain * ref).max() < 2e-4, name  # PCM_16 rounding only
        assert sfont.preset_name(s["program_num"], s["is_drum"]) == s["plugin_name"]
        other = render_notes(sfont, inst.notes, program=DRUM_KITS[-1] if s["is_drum"] else
                             (s["program_num"] + 4) % 8 + (s["program_num"] // 8) * 8,
                             is_drum=s["is_drum"], sample_rate=sr, n_samples=wav.size).astype(np.float64)
        assert np.abs(wav - float(wav @ other / (other @ other)) * other).max() > 0.01  # the preset matters
        checked += 1
    assert checked >= 4


# ---------------------------------------------------------------------------------------------------- determinism
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
    (root / "test" / "Track00004" / "MIDI" / "S00.mid").unlink()  # an incomplete track is redone
    untouched = (root / "validation" / "Track00003" / "mix.flac").stat().st_mtime_ns
    assert _gen(root, **ALL_ON) == ["Track00001", "Track00002", "Track00003", "Track00004"]
    assert _hashes(root) == _hashes(full_ds)
    assert not list((root / "train").glob(".*"))
    assert (root / "validation" / "Track00003" / "mix.flac").stat().st_mtime_ns == untouched  # skipped


def test_changed_settings_regenerate_and_moved_ids_do_not_duplicate(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    _gen(root, {"train": 2})
    before = _hashes(root)
    _gen(root, {"train": 2}, seed=99)
    assert _hashes(root)["Track00001/mix.flac"] != before["Track00001/mix.flac"]
    _gen(root, {"train": 1, "validation": 1}, seed=99)
    assert sorted(str(p.relative_to(root)) for p in root.glob("*/Track*")) == [
        "train/Track00001", "validation/Track00002"]


# ---------------------------------------------------------------------------------------------------- SoundFonts
def test_custom_soundfont_path_and_missing_preset_fallback(tmp_path: Path, full_ds: Path) -> None:
    same = tmp_path / "copy.sf2"
    shutil.copy(default_soundfont_path(), same)
    _gen(tmp_path / "same", soundfont=str(same), **ALL_ON)
    audio_and_midi = lambda h: {k: v for k, v in h.items() if not k.endswith(".yaml")}  # noqa: E731
    assert audio_and_midi(_hashes(tmp_path / "same")) == audio_and_midi(_hashes(full_ds))  # bytes decide, not path

    custom = _sf2_without(tmp_path / "custom.sf2", {(0, p) for p in range(33, 40)} | {(128, 25)})
    _gen(tmp_path / "fb", {"train": 2}, soundfont=str(custom), programs={"bass": (35,), "drums": (25,)})
    for d in sorted((tmp_path / "fb" / "train").glob("Track*")):
        meta = yaml.safe_load((d / "metadata.yaml").read_text())
        assert meta["synthetic"]["soundfont"] == "custom.sf2"
        bass = [s for s in meta["stems"].values() if s["inst_class"] == "Bass"]
        drums = [s for s in meta["stems"].values() if s["is_drum"]]
        assert [(s["program_num"], s["plugin_name"]) for s in bass] == [(32, "Acoustic Bass")]
        assert "preset 0:35 is missing from custom.sf2" in bass[0]["preset_fallback"]
        assert drums[0]["program_num"] != 25 and "preset 128:25" in drums[0]["preset_fallback"]


def test_bad_soundfont_fails_before_any_track_is_written(tmp_path: Path) -> None:
    junk = tmp_path / "junk.sf2"
    junk.write_bytes(b"RIFF\x00\x00\x00\x00WAVEfmt " + bytes(64))
    no_bass = _sf2_without(tmp_path / "no_bass.sf2", {(0, p) for p in range(32, 40)})
    for path, message in ((tmp_path / "nope.sf2", "no such SoundFont file"),
                          (junk, "not a SoundFont 2 file"), (no_bass, "no bass preset")):
        root = tmp_path / f"out_{path.stem}"
        with pytest.raises(SoundFontError, match=message) as err:
            _gen(root, soundfont=str(path))
        assert str(path) in str(err.value) and "\n" not in str(err.value)
        assert not root.exists()


def test_download_stage_refuses_a_bad_soundfont_and_keeps_the_corpus(tmp_path: Path) -> None:
    from mtmusicldm.config import DataParams, SyntheticParams
    from pipeline.download import SYNTHETIC_DIR, run

    data = DataParams(source="synthetic", local_root=None, missing_stem_policy="drop", silence_threshold_db=-60.0,
                      babyslakh_split={"validation": 0.1, "test": 0.1})
    good = SyntheticParams(tracks={"train": 1, "validation": 1, "test": 1}, min_seconds=2.0, max_seconds=2.0,
                           sample_rate=22050, extra_stem_prob=0.0, dropout_prob=0.0, seed=1, renderer="soundfont",
                           soundfont=None, programs={})
    run(data, good, tmp_path)
    before = _hashes(tmp_path / SYNTHETIC_DIR)
    with pytest.raises(SoundFontError, match="no such SoundFont file"):
        run(data, good.replace(soundfont=str(tmp_path / "missing.sf2")), tmp_path)
    assert _hashes(tmp_path / SYNTHETIC_DIR) == before


def test_oscillator_renderer_writes_the_same_layout(tmp_path: Path) -> None:
    _gen(tmp_path, {"train": 1}, renderer="oscillators")
    d = tmp_path / "train" / "Track00001"
    meta = yaml.safe_load((d / "metadata.yaml").read_text())
    assert meta["synthetic"]["renderer"] == "oscillators" and "soundfont" not in meta["synthetic"]
    assert all(s["plugin_name"].startswith("mtmusicldm_band_") for s in meta["stems"].values())
    assert all((d / "MIDI" / f"{k}.mid").is_file() for k in meta["stems"]) and (d / "all_src.mid").is_file()


def test_bad_arguments(tmp_path: Path) -> None:
    for kw in ({"seed": -1}, {"dropout_prob": 1.5}, {"renderer": "fm"}, {"programs": {"bass": (0,)}},
               {"programs": {"organ": (16,)}}, {"programs": {"piano": ()}}):
        with pytest.raises(ValueError):
            _settings(**kw)
    with pytest.raises(ValueError):
        _gen(tmp_path, {"valid": 1})
    with pytest.raises(ValueError):
        BandSettings(seed=0, min_seconds=3.0, max_seconds=2.0)
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
RENDERERS = ("soundfont", "oscillators")


def _stem(seed: int, index: int, family: str, renderer: str) -> tuple[SongPlan, np.ndarray]:
    settings = BandSettings(seed=seed, min_seconds=6.0, max_seconds=6.0, sample_rate=22050, dropout_prob=0.0,
                            renderer=renderer)
    track = render_band_track(index, settings)
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


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("index", [1, 2, 3, 4])
def test_bass_plays_in_key_on_chord_tones(index: int, renderer: str) -> None:
    plan, bass = _stem(11, index, "bass", renderer)
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


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("index", [1, 2, 3, 4])
def test_drum_onsets_follow_the_tempo(index: int, renderer: str) -> None:
    plan, drums = _stem(11, index, "drums", renderer)
    onsets = _onset_times(drums)
    assert onsets.size >= plan.n_bars
    assert _on_grid(onsets, plan) > 0.75, plan.describe()  # sampled kits ring and flam a little
    detuned = dataclasses.replace(plan, tempo_bpm=plan.tempo_bpm * 1.08)
    assert _on_grid(onsets, detuned) < _on_grid(onsets, plan) - 0.2  # the check can fail
