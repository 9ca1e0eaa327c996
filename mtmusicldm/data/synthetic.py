"""The embedded band corpus: songs composed as notes, rendered stem by stem, written in Slakh2100's own layout.

Slakh2100 is Lakh MIDI rendered stem by stem with sample-based virtual instruments, the MIDI shipped beside the
audio; this corpus is made the same way. Songs are composed by `mtmusicldm.data.composer` (shared tempo, key, meter
and chords; bass, drums, guitar, piano, sometimes a second guitar/piano, extra stems of ignored classes, bars
dropped out) and each stem is rendered alone by one of two renderers:

* `soundfont` (default): the stem's MIDI played through a General MIDI preset of an SF2 file by TinySoundFont
  (`mtmusicldm.data.soundfont`; default SoundFont: pretty_midi's `TimGM6mb.sf2`), drums through a drum kit;
* `oscillators`: numpy test-signal voices (`mtmusicldm.data.oscillators`), the project's first generator.

Layout (`slakh2100_flac_redux`, so the Slakh reader ingests it unchanged)::

    root/<split>/TrackNNNNN/metadata.yaml       Slakh's fields + a `synthetic` block (plan, renderer, fingerprint)
    root/<split>/TrackNNNNN/all_src.mid         every stem's MIDI (tempo, meter and key signature)
    root/<split>/TrackNNNNN/MIDI/SXX.mid        one stem's MIDI (unrendered stems too, as in Slakh)
    root/<split>/TrackNNNNN/stems/SXX.flac      rendered stems: mono, `sample_rate`, PCM_16, peak <= 0.9
    root/<split>/TrackNNNNN/mix.flac            sum of the rendered stems, clipped to [-1, 1] for writing

Track ids run over the splits in the order train, validation, test (Track00001, ...). Track k depends only on
`(seed, k)`, the settings and the SoundFont file's bytes, never on how many tracks are made. Each stem draws from
its own random stream, so e.g. changing `extra_stem_prob` leaves the four core stems untouched.
"""
from __future__ import annotations

import copy
import hashlib
import io
import math
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from mtmusicldm.audio.io import save_audio
from mtmusicldm.data.composer import (
    CORE_CLASSES,
    Note,
    SongPlan,
    StemSlot,
    band_rng,
    compose_part,
    plan_song,
    stem_layout,
)
from mtmusicldm.data.gm import CLASS_PROGRAMS, DRUM_KITS, EXTRA_FAMILIES, FAMILIES, GM_NAMES
from mtmusicldm.data.oscillators import render_oscillator_stem
from mtmusicldm.data.soundfont import SoundFont, load_soundfont, render_notes
from mtmusicldm.utils.fs import atomic_dir, clean_stale_tmp

__all__ = ["SPLITS", "GENERATOR", "RENDERERS", "DRUM_KITS", "BandSettings", "BandStem", "BandTrack", "SongPlan",
           "check_soundfont", "generate_band_dataset", "plan_song", "render_band_track"]

SPLITS: tuple[str, ...] = ("train", "validation", "test")
GENERATOR = "mtmusicldm.band/2"
"""Generator version, stored in each track's metadata; bump it whenever the output for a given seed changes."""
RENDERERS = ("soundfont", "oscillators")
MIDI_RESOLUTION = 960  # ticks per beat of the written MIDI (0.4-0.9 ms at 70-170 bpm)
_STEM_PEAK = 0.9  # a single stem never peaks above this


@dataclass(frozen=True)
class BandSettings:
    """Everything a generated track depends on, besides `(seed, index)`.

    Attributes:
        seed: non-negative integer.
        min_seconds, max_seconds: track duration range (uniform).
        sample_rate: Hz of the written FLAC files (Slakh: 44100).
        renderer: "soundfont" | "oscillators".
        soundfont: SF2 path for the soundfont renderer (None = pretty_midi's TimGM6mb.sf2).
        programs: program pools per class: General MIDI programs of bass / guitar / piano (within the class's GM
            family), drum kit numbers (bank 128) of drums. Missing classes use the whole family / `DRUM_KITS`.
        extra_stem_prob: chance of 1-2 extra stems of other classes (Organ, Strings, Synth Lead, Synth Pad).
        dropout_prob: chance that a stem is silent in a given bar.
        double_stem_prob: chance that guitar or piano is split over two stems of different programs.
        unrendered_prob: chance of one extra stem listed with `audio_rendered: false` (MIDI only, no audio).
    """

    seed: int
    min_seconds: float
    max_seconds: float
    sample_rate: int = 44100
    renderer: Literal["soundfont", "oscillators"] = "soundfont"
    soundfont: str | None = None
    programs: Mapping[str, tuple[int, ...]] = field(default_factory=dict)
    extra_stem_prob: float = 0.3
    dropout_prob: float = 0.15
    double_stem_prob: float = 0.2
    unrendered_prob: float = 0.1

    def __post_init__(self) -> None:
        if not (isinstance(self.seed, int) and self.seed >= 0):
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if not 0 < self.min_seconds <= self.max_seconds or self.sample_rate < 8000:
            raise ValueError(f"need 0 < min_seconds <= max_seconds and sample_rate >= 8000, got "
                             f"{self.min_seconds}, {self.max_seconds}, {self.sample_rate}")
        probs = {k: getattr(self, k) for k in ("extra_stem_prob", "dropout_prob", "double_stem_prob",
                                                "unrendered_prob")}
        if not all(0.0 <= p <= 1.0 for p in probs.values()):
            raise ValueError(f"probabilities must lie in [0, 1], got {probs}")
        if self.renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {RENDERERS}, got {self.renderer!r}")
        for cls, pool in self.programs.items():
            allowed = range(128) if cls == "drums" else CLASS_PROGRAMS.get(cls, ())
            if cls not in CORE_CLASSES or not pool or any(p not in allowed for p in pool):
                raise ValueError(f"programs.{cls}: must be a non-empty list of "
                                 f"{'kit numbers 0-127' if cls == 'drums' else f'{cls} programs {list(allowed)}'}"
                                 f", got {list(pool)}")
        object.__setattr__(self, "programs", {k: tuple(int(p) for p in v) for k, v in sorted(self.programs.items())})

    def pool(self, family: str) -> tuple[int, ...]:
        """Programs (kits for drums) a stem of `family` draws from."""
        if family in self.programs:
            return self.programs[family]
        return DRUM_KITS if family == "drums" else tuple(FAMILIES[family][1])

    def fingerprint(self, soundfont: SoundFont | None) -> str:
        """Identifies the output of these settings (and the SoundFont's bytes)."""
        spec = asdict(self) | {"generator": GENERATOR, "programs": {k: list(v) for k, v in self.programs.items()},
                               "soundfont": soundfont.sha256 if soundfont is not None else None}
        return hashlib.sha256(repr(sorted(spec.items())).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class BandStem:
    """One stem of a generated track; `audio` is None when `audio_rendered` is false (no file, as in Slakh).

    `midi` is the stem as it was written to MIDI (`pretty_midi.Instrument`); the soundfont renderer plays exactly
    these notes. `fallback` says which preset replaced a missing one (None when the drawn preset was played).
    """

    family: str
    program: int
    is_drum: bool
    inst_class: str
    plugin_name: str
    midi: Any
    audio: np.ndarray | None
    fallback: str | None = None


@dataclass(frozen=True)
class BandTrack:
    """A generated track in memory: `stems[i]` is written as `S{i:02d}`."""

    track_id: str
    plan: SongPlan
    sample_rate: int
    stems: tuple[BandStem, ...]
    overall_gain: float
    midi: Any  # pretty_midi.PrettyMIDI of all stems (all_src.mid)


# ---------------------------------------------------------------------------------------------------- MIDI
def _midi_notes(notes: Sequence[Note]) -> list[Any]:
    """Notes -> `pretty_midi.Note`s: velocity 1-127; a note ends no later than the next note of its pitch."""
    import pretty_midi

    out, ordered = [], sorted(notes, key=lambda x: (x.onset, x.pitch))
    next_onset: dict[int, float] = {}
    for x in reversed(ordered):
        end = min(x.onset + max(x.dur, 0.01), next_onset.get(x.pitch, math.inf))
        velocity = int(np.clip(round(x.vel * 127), 1, 127))
        out.append(pretty_midi.Note(velocity=velocity, pitch=int(x.pitch), start=float(x.onset), end=float(end)))
        next_onset[x.pitch] = x.onset
    return out[::-1]


def _song_midi(plan: SongPlan, instruments: Sequence[Any]) -> Any:
    """A `PrettyMIDI` with the song's tempo, meter and key, holding `instruments`, round-tripped through bytes so
    that its notes are exactly what the file says (tick-quantised)."""
    import pretty_midi

    pm = pretty_midi.PrettyMIDI(resolution=MIDI_RESOLUTION, initial_tempo=plan.tempo_bpm)
    pm.time_signature_changes.append(pretty_midi.TimeSignature(plan.beats_per_bar, 4, 0.0))
    pm.key_signature_changes.append(pretty_midi.KeySignature(plan.key + 12 * (plan.mode == "minor"), 0.0))
    pm.instruments.extend(instruments)
    return pretty_midi.PrettyMIDI(io.BytesIO(_midi_bytes(pm)))


def _midi_bytes(pm: Any) -> bytes:
    buf = io.BytesIO()
    pm.write(buf)
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------- rendering
def _level(y: np.ndarray, rng: np.random.Generator, overall_gain: float, quieter: bool) -> np.ndarray:
    """Scale to -27..-20 dBFS RMS (+ overall gain, -3 dB for a second stem of a class or an extra class), peak
    capped at 0.9: one stem stays in [-1, 1], the sum of stems may exceed 1, as in real multitracks."""
    level_db = float(rng.uniform(-27.0, -20.0)) + 20.0 * math.log10(overall_gain) - 3.0 * quieter
    rms, peak = float(np.sqrt(np.mean(np.square(y, dtype=np.float64)))), float(np.abs(y).max())
    gain = min(10.0 ** (level_db / 20.0) / rms, _STEM_PEAK / peak) if peak > 0 and rms > 0 else 0.0
    return (y * gain).astype(np.float32)


def _preset(settings: BandSettings, sf: SoundFont | None, slot: StemSlot, kit: int) -> tuple[int, str, str | None]:
    """(program to play, plugin_name, fallback note) of a stem."""
    program = kit if slot.family == "drums" else slot.program
    if sf is None:
        return program, f"mtmusicldm_band_{slot.family}_{slot.program}.nkm", None
    family = settings.pool("drums") if slot.family == "drums" else tuple(FAMILIES[slot.family][1])
    used, note = sf.resolve(program, family, slot.family == "drums", slot.family)
    return used, sf.preset_name(used, slot.family == "drums"), note


def render_band_track(index: int, settings: BandSettings, soundfont: SoundFont | None = None) -> BandTrack:
    """Compose and render track `index` (1-based) in memory.

    Args:
        index: track number; the track depends only on `(settings.seed, index)`, the settings and the SoundFont.
        settings: generation settings.
        soundfont: the loaded SoundFont of `settings.soundfont` (loaded here when None and needed).
    """
    import pretty_midi

    seed, sr = settings.seed, settings.sample_rate
    sf = None
    if settings.renderer == "soundfont":
        sf = soundfont if soundfont is not None else load_soundfont(settings.soundfont)
    plan = plan_song(seed, index, settings.min_seconds, settings.max_seconds)
    n = max(1, int(round(plan.duration_s * sr)))
    layout_rng = band_rng(seed, index, 1)
    layout = stem_layout(layout_rng, programs=settings.programs, extra_stem_prob=settings.extra_stem_prob,
                         double_stem_prob=settings.double_stem_prob, unrendered_prob=settings.unrendered_prob)
    overall_gain = float(layout_rng.uniform(0.55, 0.85))
    kits = settings.pool("drums")
    kit = int(kits[int(band_rng(seed, index, 2).integers(len(kits)))])
    parts = []
    for slot in layout:
        rng = band_rng(seed, index, 10 + slot.slot)
        notes = compose_part(plan, slot.family, slot.style, rng, settings.dropout_prob)
        program, plugin, fallback = _preset(settings, sf, slot, kit)
        inst_class = "Drums" if slot.family == "drums" else FAMILIES[slot.family][0]
        inst = pretty_midi.Instrument(program=program, is_drum=slot.family == "drums", name=inst_class)
        inst.notes = _midi_notes(notes)
        parts.append((slot, rng, notes, program, plugin, fallback, inst_class, inst))
    midi = _song_midi(plan, [p[-1] for p in parts])
    stems = []
    for (slot, rng, notes, program, plugin, fallback, inst_class, _), inst in zip(parts, midi.instruments):
        audio = None
        if slot.rendered:
            if sf is None:
                y = render_oscillator_stem(notes, slot.family, slot.program, sr, n, rng)
            else:
                y = render_notes(sf, inst.notes, program=program, is_drum=inst.is_drum, sample_rate=sr, n_samples=n)
            audio = _level(y, rng, overall_gain, quieter=slot.slot >= 5)
        stems.append(BandStem(slot.family, program, inst.is_drum, inst_class, plugin, inst, audio, fallback))
    return BandTrack(f"Track{index:05d}", plan, sr, tuple(stems), overall_gain, midi)


# ---------------------------------------------------------------------------------------------------- writing
def _metadata(track: BandTrack, settings: BandSettings, sf: SoundFont | None, fingerprint: str) -> dict:
    """Slakh2100 `metadata.yaml` fields (+ a `synthetic` block the Slakh reader ignores)."""
    stems = {}
    for i, s in enumerate(track.stems):
        entry = {"audio_rendered": s.audio is not None, "inst_class": s.inst_class, "is_drum": s.is_drum,
                 "midi_program_name": "Drums" if s.is_drum else GM_NAMES[s.program], "midi_saved": True,
                 "plugin_name": s.plugin_name, "program_num": s.program}
        if s.audio is not None:  # rough LUFS stand-in: mean-square level in dB (no K-weighting, no gating)
            ms = float(np.mean(np.square(s.audio, dtype=np.float64)))
            entry["integrated_loudness"] = round(max(-70.0, 10 * math.log10(ms + 1e-12) - 0.691), 4)
        if s.fallback is not None:
            entry["preset_fallback"] = s.fallback
        stems[f"S{i:02d}"] = entry
    renderer = {"renderer": settings.renderer}
    if sf is not None:
        renderer |= {"soundfont": sf.path.name, "soundfont_sha256": sf.sha256}
    return {"UUID": hashlib.sha256(f"{GENERATOR}:{settings.seed}:{track.plan.index}".encode()).hexdigest()[:32],
            "audio_dir": "stems", "midi_dir": "MIDI", "normalized": True,
            "overall_gain": round(track.overall_gain, 6),
            "target_peak": round(20 * math.log10(track.overall_gain), 4), "stems": stems,
            "synthetic": {"generator": GENERATOR, "seed": settings.seed, "index": track.plan.index,
                          "fingerprint": fingerprint, "duration_s": round(track.plan.duration_s, 6),
                          "sample_rate": track.sample_rate, **renderer, **track.plan.describe()}}


def _write_track(out: Path, track: BandTrack, meta: dict) -> None:
    """stems/SXX.flac (PCM_16), MIDI/SXX.mid, all_src.mid, mix.flac (clipped to [-1, 1]) and metadata.yaml."""
    (out / "stems").mkdir()
    (out / "MIDI").mkdir()
    mix = np.zeros(next(s.audio for s in track.stems if s.audio is not None).shape, dtype=np.float64)
    for i, s in enumerate(track.stems):
        single = copy.copy(track.midi)  # same tempo map, meter and key; one instrument
        single.instruments = [s.midi]
        single.write(str(out / "MIDI" / f"S{i:02d}.mid"))
        if s.audio is not None:
            save_audio(out / "stems" / f"S{i:02d}.flac", s.audio, track.sample_rate, "PCM_16")
            mix += s.audio
    track.midi.write(str(out / "all_src.mid"))
    save_audio(out / "mix.flac", np.clip(mix, -1.0, 1.0), track.sample_rate, "PCM_16")
    (out / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=True, default_flow_style=False))


def _generated(track_dir: Path) -> tuple[int, str] | None:
    """(index, fingerprint) if `track_dir` is a complete track written by this generator, else None."""
    try:
        meta = yaml.safe_load((track_dir / "metadata.yaml").read_text())
        files = [track_dir / "stems" / f"{k}.flac" for k, v in meta["stems"].items() if v["audio_rendered"]]
        files += [track_dir / "MIDI" / f"{k}.mid" for k in meta["stems"]] + [track_dir / "all_src.mid",
                                                                              track_dir / "mix.flac"]
        if not all(f.is_file() for f in files):
            return None
        return int(meta["synthetic"]["index"]), str(meta["synthetic"]["fingerprint"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def check_soundfont(settings: BandSettings) -> SoundFont | None:
    """Load the SoundFont of the soundfont renderer and check that every family can be played (None for the
    oscillator renderer).

    Raises:
        SoundFontError: missing file, not an SF2 file, or no preset at all for a family that songs can draw.
    """
    if settings.renderer != "soundfont":
        return None
    sf = load_soundfont(settings.soundfont)
    for family in (*CORE_CLASSES, *EXTRA_FAMILIES):
        pool = settings.pool("drums") if family == "drums" else tuple(FAMILIES[family][1])
        sf.resolve(pool[0], pool, family == "drums", family)
    return sf


def generate_band_dataset(root: Path, tracks_per_split: Mapping[str, int], settings: BandSettings, *,
                          progress: bool = False) -> list[str]:
    """Write (or complete) the band corpus in Slakh2100 flac-redux layout under `root`.

    The SoundFont is checked before any track is written (missing file, not an SF2 file, or no preset for a
    needed family -> `SoundFontError`). Writes are atomic per track (temporary sibling directory, then rename), so
    a killed run leaves no half track. Re-running skips tracks that are complete and were made with the same
    settings and SoundFont, regenerates the others, and removes generated tracks that are no longer part of the
    requested dataset (e.g. a track id that moved to another split). Folders this generator did not write are
    never modified: one in the way of a track raises ValueError.

    Args:
        root: dataset root; `root/<split>/TrackNNNNN/...` is created.
        tracks_per_split: e.g. `{"train": 80, "validation": 10, "test": 10}` (keys from `SPLITS`).
        settings: generation settings.
        progress: print one line per generated track to stderr.

    Returns:
        The sorted track ids of the dataset (generated now or found complete).
    """
    root = Path(root)
    if set(tracks_per_split) - set(SPLITS) or any(int(v) < 0 for v in tracks_per_split.values()):
        raise ValueError(f"tracks_per_split must map {SPLITS} to counts >= 0, got {dict(tracks_per_split)}")
    sf = check_soundfont(settings)
    fingerprint = settings.fingerprint(sf)
    splits = [split for split in SPLITS for _ in range(int(tracks_per_split.get(split, 0)))]
    planned = {(split, f"Track{k:05d}") for k, split in enumerate(splits, start=1)}
    for split in SPLITS:  # leftovers of killed runs, then generated tracks outside the requested dataset
        clean_stale_tmp(root / split)
        for d in sorted((root / split).glob("Track*")):
            if (split, d.name) not in planned and _generated(d) is not None:
                shutil.rmtree(d)
    for k, split in enumerate(splits, start=1):
        track_dir = root / split / f"Track{k:05d}"
        found = _generated(track_dir)
        if found == (k, fingerprint):
            continue
        if track_dir.exists() and found is None and "synthetic:" not in _read_text(track_dir / "metadata.yaml"):
            raise ValueError(f"{track_dir}: exists and was not written by {GENERATOR}; refusing to overwrite it")
        t0 = time.perf_counter()
        track = render_band_track(k, settings, sf)
        with atomic_dir(track_dir) as tmp:
            _write_track(tmp, track, _metadata(track, settings, sf, fingerprint))
        if progress:
            print(f"[band] {split}/{track.track_id} ({k}/{len(splits)}): {track.plan.duration_s:.1f} s, "
                  f"{len(track.stems)} stems ({settings.renderer}) in {time.perf_counter() - t0:.2f} s",
                  file=sys.stderr)
    return sorted(tid for _, tid in planned)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""
