"""Deterministic procedural "band" generator: the project's embedded default dataset (no download).

Each song is planned from `(seed, index)` only (tempo 70-170 bpm, key, mode, meter, chord progression, swing),
then bass, drums, guitar and piano parts (plus optional extra stems) are written as notes that share that plan and
synthesised with vectorised numpy (wavetable additive voices, Karplus-Strong plucks, noise/sweep drums).
The result is written in Slakh2100's own `slakh2100_flac_redux` layout, so the Slakh reader ingests it unchanged:

    root/<split>/TrackNNNNN/metadata.yaml       real Slakh fields + a `synthetic` block (plan, fingerprint)
    root/<split>/TrackNNNNN/stems/SXX.flac      mono, `sample_rate`, PCM_16, each stem peak <= 0.9
    root/<split>/TrackNNNNN/mix.flac            sum of the rendered stems, clipped to [-1, 1] for writing

Track ids run over the splits in the order train, validation, test (Track00001, ...). Track k's audio depends only
on `(seed, k)` and the generation arguments, never on how many tracks are made. Each part draws from its own
`np.random.Generator` stream, so e.g. changing `extra_stem_prob` leaves the four core stems untouched.
"""
from __future__ import annotations

import functools
import hashlib
import math
import shutil
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml
from scipy.signal import butter, lfilter, sosfilt

from mtmusicldm.audio.io import save_audio
from mtmusicldm.utils.fs import atomic_dir, clean_stale_tmp

__all__ = ["SPLITS", "GENERATOR", "SongPlan", "BandStem", "BandTrack", "plan_song", "render_band_track",
           "generate_band_dataset"]

SPLITS: tuple[str, ...] = ("train", "validation", "test")
GENERATOR = "mtmusicldm.band/1"
"""Generator version, stored in each track's metadata; bump it whenever the audio for a given seed changes."""

_NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Progressions as 0-based scale degrees: I-V-vi-IV, ii-V-I-I, I-IV-V-IV, I-vi-IV-V, vi-IV-I-V; i-VI-III-VII, ...
_PROGRESSIONS = {"major": ((0, 4, 5, 3), (1, 4, 0, 0), (0, 3, 4, 3), (0, 5, 3, 4), (5, 3, 0, 4)),
                 "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2))}
_GM_NAMES = dict(zip([*range(8), *range(16, 20), *range(24, 40), 48, 49, 80, 81, 88, 89], (
    "Acoustic Grand Piano|Bright Acoustic Piano|Electric Grand Piano|Honky-tonk Piano|Electric Piano 1|"
    "Electric Piano 2|Harpsichord|Clavinet|Drawbar Organ|Percussive Organ|Rock Organ|Church Organ|"
    "Acoustic Guitar (nylon)|Acoustic Guitar (steel)|Electric Guitar (jazz)|Electric Guitar (clean)|"
    "Electric Guitar (muted)|Overdriven Guitar|Distortion Guitar|Guitar Harmonics|Acoustic Bass|"
    "Electric Bass (finger)|Electric Bass (pick)|Fretless Bass|Slap Bass 1|Slap Bass 2|Synth Bass 1|Synth Bass 2|"
    "String Ensemble 1|String Ensemble 2|Lead 1 (square)|Lead 2 (sawtooth)|Pad 1 (new age)|Pad 2 (warm)"
).split("|")))
# family -> (Slakh inst_class, GM programs); extra families are ignored by the 4-stem reader.
_FAMILIES = {"bass": ("Bass", range(32, 40)), "guitar": ("Guitar", range(24, 32)), "piano": ("Piano", range(8)),
             "organ": ("Organ", range(16, 20)), "strings": ("Strings", (48, 49)),
             "lead": ("Synth Lead", (80, 81)), "pad": ("Synth Pad", (88, 89))}
_EXTRA_FAMILIES = ("organ", "strings", "lead", "pad")
_STEM_PEAK = 0.9  # a single stem never peaks above this
_TABLE = 4096      # wavetable length


class Note(NamedTuple):
    """One event: onset/duration in seconds, MIDI pitch (GM drum key for drums), linear velocity in (0, 1]."""

    onset: float
    dur: float
    pitch: int
    vel: float


@dataclass(frozen=True)
class SongPlan:
    """Everything the stems of one song share."""

    index: int
    duration_s: float
    tempo_bpm: float
    key: int                      # tonic pitch class, 0 = C
    mode: str                     # "major" | "minor"
    beats_per_bar: int            # 4 or 3
    swing: float                  # 0 = straight 8ths, 1 = triplet feel
    progression: tuple[int, ...]  # scale degrees, one chord per bar, looped

    @property
    def beat_s(self) -> float:
        return 60.0 / self.tempo_bpm

    @property
    def n_bars(self) -> int:
        return max(1, math.ceil(self.duration_s / (self.beat_s * self.beats_per_bar)))

    @property
    def scale(self) -> tuple[int, ...]:
        """Pitch classes of the key's diatonic scale."""
        return tuple((self.key + s) % 12 for s in _SCALES[self.mode])

    def chord(self, bar: int) -> tuple[int, int, int]:
        """Pitch classes (root, third, fifth) of the diatonic triad in `bar`."""
        deg, scale = self.progression[bar % len(self.progression)], _SCALES[self.mode]
        return tuple((self.key + scale[(deg + 2 * i) % 7]) % 12 for i in range(3))  # type: ignore[return-value]

    def time(self, bar: int, beat: float) -> float:
        """Seconds of `beat` (in beats, from the bar start) in `bar`; off-beat 8ths are swung."""
        whole = math.floor(beat)
        frac = beat - whole
        if abs(frac - 0.5) < 1e-9:
            frac = 0.5 + self.swing / 6.0
        return (bar * self.beats_per_bar + whole + frac) * self.beat_s

    def describe(self) -> dict:
        return {"tempo_bpm": round(self.tempo_bpm, 3), "key": _NOTE_NAMES[self.key], "key_pc": self.key,
                "mode": self.mode, "meter": f"{self.beats_per_bar}/4", "swing": round(self.swing, 4),
                "progression": list(self.progression), "chord_roots": [self.chord(b)[0] for b in
                                                                        range(len(self.progression))]}


@dataclass(frozen=True)
class BandStem:
    """One stem of a generated track; `audio` is None when `audio_rendered` is false (no file, as in Slakh)."""

    family: str
    program: int
    is_drum: bool
    inst_class: str
    plugin_name: str
    audio: np.ndarray | None


@dataclass(frozen=True)
class BandTrack:
    """A generated track in memory: `stems[i]` is written as `S{i:02d}`."""

    track_id: str
    plan: SongPlan
    sample_rate: int
    stems: tuple[BandStem, ...]
    overall_gain: float


def _rng(seed: int, index: int, *stream: int) -> np.random.Generator:
    from mtmusicldm.utils.rng import numpy_rng

    return numpy_rng(seed, index, *stream)


def _hz(pitch: float) -> float:
    return 440.0 * 2.0 ** ((pitch - 69) / 12)


def _nearest(pc: int, center: int) -> int:
    """MIDI note of pitch class `pc` closest to `center`."""
    return center + ((pc - center + 6) % 12) - 6


def plan_song(seed: int, index: int, min_seconds: float, max_seconds: float) -> SongPlan:
    """Draw song-level parameters for track `index` (1-based) from `(seed, index)` only."""
    rng = _rng(seed, index, 0)
    mode = "major" if rng.random() < 0.6 else "minor"
    progs = _PROGRESSIONS[mode]
    return SongPlan(index=index, duration_s=float(min_seconds + rng.random() * (max_seconds - min_seconds)),
                    tempo_bpm=float(rng.uniform(70.0, 170.0)), key=int(rng.integers(12)), mode=mode,
                    beats_per_bar=4 if rng.random() < 0.8 else 3,
                    swing=float(rng.uniform(0.0, 0.6)) if rng.random() < 0.35 else 0.0,
                    progression=progs[int(rng.integers(len(progs)))])


# ---------------------------------------------------------------------------------------------------- parts
def _jitter(rng: np.random.Generator, t: float) -> float:
    return max(0.0, t + float(rng.normal(0.0, 0.004)))


def _bass_part(plan: SongPlan, rng: np.random.Generator) -> list[Note]:
    """Root / root-fifth / octave / walking patterns on the chord roots (roots near E2, up to A#3)."""
    style = rng.choice(["root", "root_fifth", "octave", "walking"], p=[0.3, 0.3, 0.2, 0.2])
    bpb, notes = plan.beats_per_bar, []
    for bar in range(plan.n_bars):
        root, _, fifth = plan.chord(bar)
        r = _nearest(root, 40)
        if style == "root":
            hits = [(b, 1.8, r) for b in range(0, bpb, 2)]
        elif style == "root_fifth":
            hits = [(b, 0.9, r if b % 2 == 0 else _nearest(fifth, r + 5)) for b in range(bpb)]
        elif style == "octave":
            hits = [(h / 2, 0.45, r + 12 * (h % 2)) for h in range(2 * bpb)]
        else:  # walking: chord tones, then a diatonic step into the next bar's root
            nxt = _nearest(plan.chord(bar + 1)[0], r)
            steps = [p for p in range(nxt - 2, nxt + 3) if p % 12 in plan.scale and p != nxt]
            approach = steps[int(rng.integers(len(steps)))]
            line = [r, _nearest(plan.chord(bar)[1], r + 4), _nearest(fifth, r + 7)][: bpb - 1] + [approach]
            hits = [(b, 0.9, p) for b, p in enumerate(line)]
        for beat, dur, pitch in hits:
            notes.append(Note(_jitter(rng, plan.time(bar, beat)), dur * plan.beat_s, int(pitch),
                              float(rng.uniform(0.75, 1.0))))
    return notes


def _voicing(pcs: tuple[int, ...], center: int) -> list[int]:
    """Close voicing: each chord tone at its octave nearest `center`, ascending."""
    return sorted(_nearest(pc, center) for pc in pcs)


def _piano_part(plan: SongPlan, rng: np.random.Generator) -> list[Note]:
    """Block chords (with accents) or broken-chord 8ths, voiced around middle C."""
    style, bpb, notes = ("block", "broken")[int(rng.integers(2))], plan.beats_per_bar, []
    rhythms = [[0.0], [0.0, bpb / 2], list(range(bpb)), [0.0, 1.5, 3.0] if bpb == 4 else [0.0, 1.5]]
    rhythm = rhythms[int(rng.integers(len(rhythms)))]
    center = int(rng.integers(58, 67))
    for bar in range(plan.n_bars):
        voicing = _voicing(plan.chord(bar), center)
        if style == "block":
            for i, beat in enumerate(rhythm):
                end = rhythm[i + 1] if i + 1 < len(rhythm) else bpb
                vel = (1.0 if beat == 0 else 0.75) * float(rng.uniform(0.6, 0.9))
                t = _jitter(rng, plan.time(bar, beat))
                notes += [Note(t, (end - beat) * plan.beat_s * 0.95, p, vel) for p in voicing]
        else:
            order = voicing + voicing[-2:0:-1]
            for h in range(2 * bpb):
                notes.append(Note(_jitter(rng, plan.time(bar, h / 2)), plan.beat_s * 0.9, order[h % len(order)],
                                  float(rng.uniform(0.5, 0.8))))
    return notes


def _guitar_part(plan: SongPlan, rng: np.random.Generator, style: str | None = None) -> list[Note]:
    """Strummed chords (down/up strokes, staggered strings) or arpeggiated picking, about D#2-F4."""
    style = style or ("strum", "arpeggio")[int(rng.integers(2))]
    bpb, notes = plan.beats_per_bar, []
    grid = 0.25 if (style == "arpeggio" and plan.tempo_bpm < 110) else 0.5
    positions = [p for p in np.arange(0, bpb, grid)]
    if style == "strum":
        positions = [p for p in positions if p == 0 or rng.random() < 0.6]
    for bar in range(plan.n_bars):
        pcs = plan.chord(bar)
        shape = [_nearest(pcs[0], 45)] + _voicing(pcs, 59)
        for i, beat in enumerate(positions):
            t0 = _jitter(rng, plan.time(bar, float(beat)))
            end = positions[i + 1] if i + 1 < len(positions) else bpb
            if style == "strum":
                down = float(beat) % 1.0 == 0.0
                strings = shape if down else shape[:0:-1]
                vel = float(rng.uniform(0.6, 0.9)) * (1.0 if down else 0.7)
                dur = (end - beat) * plan.beat_s
                notes += [Note(t0 + k * 0.012, dur, p, vel) for k, p in enumerate(strings)]
            else:
                p = shape[[0, 2, 1, 3, 2, 1][i % 6] % len(shape)]
                notes.append(Note(t0, 2 * grid * plan.beat_s, p, float(rng.uniform(0.55, 0.85))))
    return notes


def _pad_part(plan: SongPlan, rng: np.random.Generator) -> list[Note]:
    """Sustained whole-bar chords (strings, organ, synth pad)."""
    center = int(rng.integers(60, 72))
    return [Note(plan.time(bar, 0.0), plan.beats_per_bar * plan.beat_s, p, 0.7)
            for bar in range(plan.n_bars) for p in _voicing(plan.chord(bar), center)]


def _lead_part(plan: SongPlan, rng: np.random.Generator) -> list[Note]:
    """A diatonic random-walk melody in 8ths with rests, landing on chord tones on the beat."""
    scale = sorted(p for p in range(64, 89) if p % 12 in plan.scale)
    pos, notes = len(scale) // 2, []
    for bar in range(plan.n_bars):
        for h in range(2 * plan.beats_per_bar):
            pos = int(np.clip(pos + rng.integers(-2, 3), 0, len(scale) - 1))
            if h % 2 == 0 and scale[pos] % 12 not in plan.chord(bar):
                pos = max(0, pos - 1)
            if rng.random() < 0.75:
                notes.append(Note(plan.time(bar, h / 2), 0.45 * plan.beat_s, scale[pos], 0.8))
    return notes


_KICK, _SNARE, _HAT, _OPEN_HAT, _TOM = 36, 38, 42, 46, 45


def _drum_part(plan: SongPlan, rng: np.random.Generator) -> list[Note]:
    """A groove at the song tempo (kick/snare/hats), with fills at 4-bar phrase ends and a crash after them."""
    bpb = plan.beats_per_bar
    if bpb == 4:
        kick = [[0, 2], [0, 2.5], [0, 1.5, 2], [0, 1, 2, 3]][int(rng.integers(4))]
        snare = [[1, 3], [1, 3], [2]][int(rng.integers(3))]
    else:
        kick, snare = [[0], [0, 1.5]][int(rng.integers(2))], [[1, 2], [2]][int(rng.integers(2))]
    hat_grid = 0.25 if (plan.tempo_bpm < 100 and rng.random() < 0.5) else (0.5 if rng.random() < 0.8 else 1.0)
    hats = list(np.arange(0, bpb, hat_grid))
    notes: list[Note] = []
    for bar in range(plan.n_bars):
        fill = bar % 4 == 3 and rng.random() < 0.7
        hits = [(b, _KICK, 1.0) for b in kick] + [(b, _SNARE, 0.9) for b in snare]
        hits += [(float(b), _HAT, 0.6 if float(b) % 1 else 0.8) for b in hats]
        if fill:
            hits = [h for h in hits if h[0] < bpb - 1]
            hits += [(bpb - 1 + s / 4, (_SNARE, _TOM)[int(rng.integers(2))], 0.6 + 0.1 * s) for s in range(4)]
        if bar % 4 == 0 and bar > 0:
            hits.append((0, _OPEN_HAT, 0.9))
        for beat, kind, vel in hits:
            notes.append(Note(_jitter(rng, plan.time(bar, float(beat))), 0.0, kind,
                              float(np.clip(vel + rng.normal(0, 0.06), 0.2, 1.0))))
    return notes


def _apply_dropout(plan: SongPlan, notes: list[Note], prob: float, rng: np.random.Generator) -> list[Note]:
    """Silence whole bars with probability `prob` each (at least one bar is kept)."""
    keep = rng.random(plan.n_bars) >= prob
    if not keep.any():
        keep[int(rng.integers(plan.n_bars))] = True
    bar_s = plan.beat_s * plan.beats_per_bar
    # +50 ms: a note humanised slightly before its bar line still belongs to that bar
    return [n for n in notes if keep[min(plan.n_bars - 1, int((n.onset + 0.05) / bar_s))]]


# ---------------------------------------------------------------------------------------------------- voices
@functools.lru_cache(maxsize=512)
def _wavetable(amps: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """One period of sum_h amps[h] sin(2 pi (h+1) x), peak 1, as (table[N + 1], diff[N]) for linear lookup."""
    x = np.arange(_TABLE + 1) / _TABLE
    tab = np.sin(2 * np.pi * np.outer(np.arange(1, len(amps) + 1), x)).T @ np.asarray(amps)
    tab /= np.abs(tab).max()
    return tab, np.diff(tab)


@dataclass(frozen=True)
class _Timbre:
    bright: tuple[float, ...]  # harmonic amplitudes at the attack
    dull: tuple[float, ...]    # ... and after the brightness fade
    attack: float      # s
    decay: float       # 1/s, towards `sustain`
    sustain: float
    release: float     # s
    bright_tau: float  # s, how fast the bright table fades into the dull one


def _timbre(family: str, program: int, rng: np.random.Generator) -> _Timbre:
    """Random timbre for a family: harmonic tilt, odd/even balance, envelope."""
    h = np.arange(1, 17, dtype=float)
    tilt = {"bass": 1.6, "piano": 1.7, "organ": 1.0, "strings": 1.0, "lead": 1.0, "pad": 1.5}[family]
    tilt += float(rng.uniform(-0.3, 0.3)) + (1.2 if program in (4, 5) else 0.0) - (0.6 if program in (6, 38, 39)
                                                                                  else 0.0)
    amps = h ** -tilt * rng.uniform(0.6, 1.0, h.size)
    if family == "lead" and program == 80:
        amps[1::2] *= 0.05  # square-ish: odd harmonics
    if family == "organ":
        amps = np.zeros(16)
        amps[[0, 1, 2, 3, 5, 7]] = rng.uniform(0.2, 1.0, 6)
    dull = amps * np.exp(-(h - 1) * float(rng.uniform(0.4, 1.0)))
    env = {"bass": (0.005, rng.uniform(1.5, 4.0), rng.uniform(0.3, 0.6), 0.04),
           "piano": (0.002, rng.uniform(1.5, 4.0), rng.uniform(0.0, 0.1), 0.12),
           "organ": (0.01, 0.0, 1.0, 0.05), "strings": (rng.uniform(0.15, 0.35), 0.0, 1.0, 0.3),
           "lead": (0.005, 3.0, 0.7, 0.05), "pad": (rng.uniform(0.3, 0.6), 0.5, 0.7, 0.5)}[family]
    return _Timbre(tuple(amps.tolist()), tuple(dull.tolist()), float(env[0]), float(env[1]), float(env[2]),
                   float(env[3]), float(rng.uniform(0.05, 0.4)) if family in ("bass", "piano") else 1e9)


def _wavetable_note(tim: _Timbre, sr: int, pitch: int, dur: float) -> np.ndarray:
    """Additive voice via linear wavetable lookup; brightness fades bright -> dull; ADSR-like envelope.

    Harmonics above 0.45 * sr are dropped (one table per harmonic count), so any rate is alias-free.
    """
    nh = max(1, min(len(tim.bright), int(0.45 * sr / _hz(pitch))))
    bright, dull = _wavetable(tim.bright[:nh]), _wavetable(tim.dull[:nh])
    n_on = max(1, int(dur * sr))
    n = n_on + max(1, int(tim.release * sr))
    t = np.arange(n) / sr
    x = (_hz(pitch) * t) % 1.0 * _TABLE
    i = x.astype(np.intp)
    fr = x - i
    wb = bright[0][i] + fr * bright[1][i]
    wd = dull[0][i] + fr * dull[1][i]
    wave = wd + np.exp(-t / tim.bright_tau) * (wb - wd)
    env = np.minimum(1.0, t / tim.attack) * (tim.sustain + (1.0 - tim.sustain) * np.exp(-tim.decay * t))
    env[n_on:] *= np.linspace(1.0, 0.0, n - n_on)
    return wave * env


def _pluck_note(sr: int, pitch: int, dur: float, t60: float, bright: float,
                rng: np.random.Generator) -> np.ndarray:
    """Karplus-Strong string, one period-block per numpy step; tuned exactly by linear time-scaling."""
    d = sr / _hz(pitch)
    period = max(2, int(round(d - 0.5)))  # loop delay period + 0.5 (the two-point average adds half a sample)
    ratio = (period + 0.5) / d
    n_on = max(1, int(dur * sr))
    n = n_on + int(0.03 * sr)
    y = np.zeros(int(n * ratio) + period + 3)
    exc = lfilter([1.0 - bright], [1.0, -bright], rng.uniform(-1.0, 1.0, period + 1))
    y[: period + 1] = exc - exc.mean()
    g = 0.5 * 10.0 ** (-3.0 / (_hz(pitch) * t60))
    for s in range(period + 1, y.size, period):
        e = min(s + period, y.size)
        y[s:e] = g * (y[s - period:e - period] + y[s - period - 1:e - period - 1])
    x = np.arange(n) * ratio
    i = x.astype(np.intp)
    out = y[i] + (x - i) * (y[i + 1] - y[i])
    out[n_on:] *= np.linspace(1.0, 0.0, n - n_on)
    return out / max(1e-9, float(np.abs(out).max()))


def _render(notes: list[Note], make: Callable[[int, float], np.ndarray], n: int, sr: int,
            cache: bool = True) -> np.ndarray:
    """Sum `vel * make(pitch, dur)` at each onset; with `cache`, one waveform per (pitch, dur to 10 ms)."""
    out, made = np.zeros(n), {}
    for note in notes:
        start = int(round(note.onset * sr))
        if start >= n:
            continue
        key = (note.pitch, int(round(note.dur * 100)))
        if key not in made or not cache:
            made[key] = make(note.pitch, key[1] / 100)
        w = made[key]
        end = min(n, start + w.size)
        out[start:end] += note.vel * w[: end - start]
    return out


def _drum_kit(sr: int, rng: np.random.Generator) -> dict[int, list[np.ndarray]]:
    """Three variants per piece: kick/tom = pitch-swept sine, snare = tone + noise, hats = high-passed noise."""
    hp = butter(2, min(7000.0, 0.4 * sr), "highpass", fs=sr, output="sos")
    f_kick, f_tom = float(rng.uniform(45, 60)), float(rng.uniform(90, 140))
    kick_tau, snare_tau, hat_tau = (float(rng.uniform(a, b)) for a, b in ((0.12, 0.3), (0.08, 0.2), (0.02, 0.05)))

    def sweep(f0: float, tau: float, length: float) -> np.ndarray:
        t = np.arange(int(length * sr)) / sr
        f = f0 + 2.5 * f0 * np.exp(-t / 0.025)
        return np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-t / tau)

    def noise(tau: float, length: float, filt: bool) -> np.ndarray:
        t = np.arange(int(length * sr)) / sr
        z = rng.uniform(-1.0, 1.0, t.size)
        return (sosfilt(hp, z) if filt else z) * np.exp(-t / tau)

    kit = {_KICK: [sweep(f_kick, kick_tau, 0.5) + 0.1 * noise(0.004, 0.5, False) for _ in range(3)],
           _TOM: [sweep(f_tom, 0.2, 0.4) for _ in range(3)],
           _SNARE: [0.5 * sweep(float(rng.uniform(170, 230)), 0.06, 0.4) + noise(snare_tau, 0.4, False)
                    for _ in range(3)],
           _HAT: [noise(hat_tau, 0.15, True) for _ in range(3)],
           _OPEN_HAT: [noise(0.3, 0.6, True) for _ in range(3)]}
    return {k: [v / np.abs(v).max() for v in vs] for k, vs in kit.items()}


# ---------------------------------------------------------------------------------------------------- stems
_PARTS: dict[str, Callable[[SongPlan, np.random.Generator], list[Note]]] = {
    "bass": _bass_part, "piano": _piano_part, "organ": _pad_part, "strings": _pad_part, "pad": _pad_part,
    "lead": _lead_part}
_CUTOFF_HZ = {"bass": (600.0, 3000.0), "piano": (2500.0, 9000.0)}


def _render_stem(plan: SongPlan, family: str, program: int, style: str | None, sr: int, n: int,
                 rng: np.random.Generator, dropout_prob: float) -> np.ndarray:
    """Write the part, drop bars, synthesise; returns an un-normalised float64 `[n]` waveform."""
    if family == "drums":
        notes = _apply_dropout(plan, _drum_part(plan, rng), dropout_prob, rng)
        kit = _drum_kit(sr, rng)
        return _render(notes, lambda p, _: kit[p][int(rng.integers(3))], n, sr, cache=False)
    if family == "guitar":
        notes = _apply_dropout(plan, _guitar_part(plan, rng, style), dropout_prob, rng)
        t60 = float(rng.uniform(0.2, 0.35) if program == 28 else rng.uniform(0.8, 3.0))
        bright = float(rng.uniform(0.5, 0.7) if program == 24 else rng.uniform(0.05, 0.5))
        shift = 12 if program == 31 else 0
        y = _render(notes, lambda p, d: _pluck_note(sr, p + shift, d, t60, bright, rng), n, sr)
        if program in (29, 30):  # overdrive: soft clipping of the whole stem (chords intermodulate)
            drive = float(rng.uniform(3.0, 8.0))
            y = np.tanh(drive * y / max(1e-9, float(np.abs(y).max()))) / np.tanh(drive)
        return y
    notes = _apply_dropout(plan, _PARTS[family](plan, rng), dropout_prob, rng)
    tim = _timbre(family, program, rng)
    y = _render(notes, lambda p, d: _wavetable_note(tim, sr, p, d), n, sr)
    lo, hi = _CUTOFF_HZ.get(family, (2000.0, 8000.0))
    a = math.exp(-2.0 * math.pi * min(float(rng.uniform(lo, hi)), 0.45 * sr) / sr)  # one-pole low-pass
    return lfilter([1.0 - a], [1.0, -a], y)


def _stem_layout(rng: np.random.Generator, extra_stem_prob: float, double_stem_prob: float,
                 unrendered_prob: float) -> list[tuple[int, str, int, str | None, bool]]:
    """(slot, family, program, style, rendered) per stem; slot keys the stem's own random stream."""
    def program(family: str) -> int:
        progs = _FAMILIES[family][1]
        return int(progs[int(rng.integers(len(progs)))])

    gtr_style = ("strum", "arpeggio")[int(rng.integers(2))]
    stems = [(1, "bass", program("bass"), None, True), (2, "drums", 0, None, True),
             (3, "guitar", program("guitar"), gtr_style, True), (4, "piano", program("piano"), None, True)]
    if rng.random() < double_stem_prob:  # one class split over two stems (the reader must sum them)
        family = ("guitar", "piano")[int(rng.integers(2))]
        first = stems[2 if family == "guitar" else 3][2]
        other = [p for p in _FAMILIES[family][1] if p != first]
        style = ("arpeggio" if gtr_style == "strum" else "strum") if family == "guitar" else None
        stems.append((5, family, int(other[int(rng.integers(len(other)))]), style, True))
    if rng.random() < extra_stem_prob:  # other classes, ignored by the 4-stem reader
        for k, family in enumerate(rng.permutation(_EXTRA_FAMILIES)[: int(rng.integers(1, 3))]):
            stems.append((6 + k, str(family), program(str(family)), None, True))
    if rng.random() < unrendered_prob:  # listed in metadata with audio_rendered: false and no file
        family = ("bass", "guitar", "piano", "organ", "strings")[int(rng.integers(5))]
        stems.append((8, family, program(family), None, False))
    return [stems[int(i)] for i in rng.permutation(len(stems))]


def render_band_track(seed: int, index: int, *, min_seconds: float, max_seconds: float, sample_rate: int = 44100,
                      extra_stem_prob: float = 0.3, dropout_prob: float = 0.15, double_stem_prob: float = 0.2,
                      unrendered_prob: float = 0.1) -> BandTrack:
    """Synthesise track `index` (1-based) in memory; depends only on `(seed, index)` and the arguments.

    Each rendered stem is scaled to an RMS level of -27..-20 dBFS plus `20 log10(overall_gain)` (3 dB less for a
    second stem of a class or an extra class), capped so its peak is at most 0.9: one stem stays in [-1, 1] while
    the sum of stems may exceed 1, as in real multitracks.
    """
    plan = plan_song(seed, index, min_seconds, max_seconds)
    n = max(1, int(round(plan.duration_s * sample_rate)))
    layout_rng = _rng(seed, index, 1)
    layout = _stem_layout(layout_rng, extra_stem_prob, double_stem_prob, unrendered_prob)
    overall_gain = float(layout_rng.uniform(0.55, 0.85))
    stems = []
    for slot, family, program, style, rendered in layout:
        inst_class = "Drums" if family == "drums" else _FAMILIES[family][0]
        plugin = f"mtmusicldm_band_{family}_{program}.nkm"
        audio = None
        if rendered:
            rng = _rng(seed, index, 10 + slot)
            y = _render_stem(plan, family, program, style, sample_rate, n, rng, dropout_prob)
            level_db = float(rng.uniform(-27.0, -20.0)) + 20.0 * math.log10(overall_gain) - 3.0 * (slot >= 5)
            rms, peak = float(np.sqrt(np.mean(np.square(y)))), float(np.abs(y).max())
            gain = min(10.0 ** (level_db / 20.0) / rms, _STEM_PEAK / peak) if peak > 0 else 0.0
            audio = (y * gain).astype(np.float32)
        stems.append(BandStem(family, program, family == "drums", inst_class, plugin, audio))
    return BandTrack(f"Track{index:05d}", plan, sample_rate, tuple(stems), overall_gain)


# ---------------------------------------------------------------------------------------------------- writing
def _metadata(track: BandTrack, seed: int, fingerprint: str) -> dict:
    """Slakh2100 `metadata.yaml` fields (+ a `synthetic` block the Slakh reader ignores)."""
    stems = {}
    for i, s in enumerate(track.stems):
        entry = {"audio_rendered": s.audio is not None, "inst_class": s.inst_class, "is_drum": s.is_drum,
                 "midi_program_name": "Drums" if s.is_drum else _GM_NAMES[s.program], "midi_saved": False,
                 "plugin_name": s.plugin_name, "program_num": s.program}
        if s.audio is not None:  # rough LUFS stand-in: mean-square level in dB (no K-weighting, no gating)
            ms = float(np.mean(np.square(s.audio, dtype=np.float64)))
            entry["integrated_loudness"] = round(max(-70.0, 10 * math.log10(ms + 1e-12) - 0.691), 4)
        stems[f"S{i:02d}"] = entry
    return {"UUID": hashlib.sha256(f"{GENERATOR}:{seed}:{track.plan.index}".encode()).hexdigest()[:32],
            "audio_dir": "stems", "midi_dir": "MIDI", "normalized": True,
            "overall_gain": round(track.overall_gain, 6),
            "target_peak": round(20 * math.log10(track.overall_gain), 4), "stems": stems,
            "synthetic": {"generator": GENERATOR, "seed": seed, "index": track.plan.index,
                          "fingerprint": fingerprint, "duration_s": round(track.plan.duration_s, 6),
                          "sample_rate": track.sample_rate, **track.plan.describe()}}


def _write_track(out: Path, track: BandTrack, meta: dict) -> None:
    """stems/SXX.flac (PCM_16), mix.flac (sum of rendered stems, clipped to [-1, 1]) and metadata.yaml."""
    (out / "stems").mkdir()
    mix = np.zeros_like(next(s.audio for s in track.stems if s.audio is not None), dtype=np.float64)
    for i, s in enumerate(track.stems):
        if s.audio is not None:
            save_audio(out / "stems" / f"S{i:02d}.flac", s.audio, track.sample_rate, "PCM_16")
            mix += s.audio
    save_audio(out / "mix.flac", np.clip(mix, -1.0, 1.0), track.sample_rate, "PCM_16")
    (out / "metadata.yaml").write_text(yaml.safe_dump(meta, sort_keys=True, default_flow_style=False))


def _generated(track_dir: Path) -> tuple[int, str] | None:
    """(index, fingerprint) if `track_dir` is a complete track written by this generator, else None."""
    try:
        meta = yaml.safe_load((track_dir / "metadata.yaml").read_text())
        files = [track_dir / "stems" / f"{k}.flac" for k, v in meta["stems"].items() if v["audio_rendered"]]
        if not (track_dir / "mix.flac").is_file() or not all(f.is_file() for f in files):
            return None
        return int(meta["synthetic"]["index"]), str(meta["synthetic"]["fingerprint"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def _check_args(tracks_per_split: Mapping[str, int], seed: int, min_seconds: float, max_seconds: float,
                sample_rate: int, probs: Mapping[str, float]) -> None:
    if set(tracks_per_split) - set(SPLITS) or any(int(v) < 0 for v in tracks_per_split.values()):
        raise ValueError(f"tracks_per_split must map {SPLITS} to counts >= 0, got {dict(tracks_per_split)}")
    if not (isinstance(seed, int) and seed >= 0):
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not 0 < min_seconds <= max_seconds or sample_rate < 8000:
        raise ValueError(f"need 0 < min_seconds <= max_seconds and sample_rate >= 8000, got "
                         f"{min_seconds}, {max_seconds}, {sample_rate}")
    if not all(0.0 <= p <= 1.0 for p in probs.values()):
        raise ValueError(f"probabilities must lie in [0, 1], got {dict(probs)}")


def generate_band_dataset(root: Path, tracks_per_split: Mapping[str, int], *, seed: int, min_seconds: float,
                          max_seconds: float, sample_rate: int = 44100, extra_stem_prob: float = 0.3,
                          dropout_prob: float = 0.15, double_stem_prob: float = 0.2,
                          unrendered_prob: float = 0.1, progress: bool = False) -> list[str]:
    """Write (or complete) a synthetic multitrack dataset in Slakh2100 flac-redux layout under `root`.

    Writes are atomic per track (temporary sibling directory, then rename), so a killed run leaves no half
    track. Re-running skips tracks that are complete and were made with the same settings, regenerates the
    others, and removes generated tracks that are no longer part of the requested dataset (e.g. a track id
    that moved to another split because the split sizes changed). Folders this generator did not write are
    never modified: one in the way of a track raises ValueError.

    Args:
        root: dataset root; `root/<split>/TrackNNNNN/...` is created.
        tracks_per_split: e.g. `{"train": 80, "validation": 10, "test": 10}` (keys from `SPLITS`).
        seed: non-negative integer; track k depends only on `(seed, k)` and the settings below.
        min_seconds, max_seconds: track duration range (uniform).
        sample_rate: Hz of the written flac files (Slakh: 44100).
        extra_stem_prob: chance of 1-2 extra stems of other classes (Organ, Strings, Synth Lead, Synth Pad).
        dropout_prob: chance that a stem is silent in a given bar.
        double_stem_prob: chance that guitar or piano is split over two stems of different programs.
        unrendered_prob: chance of one extra stem listed with `audio_rendered: false` and no file.
        progress: print one line per generated track to stderr.

    Returns:
        The sorted track ids of the dataset (generated now or found complete).
    """
    root = Path(root)
    probs = {"extra_stem_prob": extra_stem_prob, "dropout_prob": dropout_prob,
             "double_stem_prob": double_stem_prob, "unrendered_prob": unrendered_prob}
    _check_args(tracks_per_split, seed, min_seconds, max_seconds, sample_rate, probs)
    settings = {"generator": GENERATOR, "seed": seed, "min_seconds": float(min_seconds), "sample_rate": sample_rate,
                "max_seconds": float(max_seconds), **{k: float(v) for k, v in probs.items()}}
    fingerprint = hashlib.sha256(repr(sorted(settings.items())).encode()).hexdigest()[:16]
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
        track = render_band_track(seed, k, sample_rate=sample_rate, min_seconds=min_seconds,
                                  max_seconds=max_seconds, **probs)
        with atomic_dir(track_dir) as tmp:
            _write_track(tmp, track, _metadata(track, seed, fingerprint))
        if progress:
            print(f"[synthetic] {split}/{track.track_id} ({k}/{len(splits)}): {track.plan.duration_s:.1f} s, "
                  f"{len(track.stems)} stems in {time.perf_counter() - t0:.2f} s", file=sys.stderr)
    return sorted(tid for _, tid in planned)


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return ""
