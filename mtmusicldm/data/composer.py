"""The score of the embedded band: song plans and parts as notes (no audio).

Each song is planned from `(seed, index)` only (tempo 70-170 bpm, key, mode, meter, chord progression, swing); the
parts share that plan: the bass follows chord roots (root / root-fifth / octave / walking), the piano voices the
chords (block or broken), the guitar strums or arpeggiates, the drums keep a groove with fills and a crash after
them, and extra stems of ignored classes play pads or a lead line. Stems drop out for whole bars. Notes carry onset
and duration in seconds, a MIDI pitch (a General MIDI drum key for drums) and a velocity in (0, 1]; humanised timing
(+-4 ms) and velocities come from the part's own `np.random.Generator`.

Renderers (`mtmusicldm.data.oscillators`, `mtmusicldm.data.soundfont`) turn these notes into audio; the band writer
(`mtmusicldm.data.synthetic`) also saves them as MIDI beside the audio, as Slakh2100 does.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from mtmusicldm.data.gm import EXTRA_FAMILIES, FAMILIES
from mtmusicldm.utils.rng import numpy_rng

__all__ = ["CORE_CLASSES", "CRASH", "HAT", "KICK", "Note", "OPEN_HAT", "SNARE", "SongPlan", "StemSlot", "TOM",
           "band_rng", "compose_part", "hz", "plan_song", "stem_layout"]

_NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
_SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
# Progressions as 0-based scale degrees: I-V-vi-IV, ii-V-I-I, I-IV-V-IV, I-vi-IV-V, vi-IV-I-V; i-VI-III-VII, ...
_PROGRESSIONS = {"major": ((0, 4, 5, 3), (1, 4, 0, 0), (0, 3, 4, 3), (0, 5, 3, 4), (5, 3, 0, 4)),
                 "minor": ((0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2))}


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


def band_rng(seed: int, index: int, *stream: int) -> np.random.Generator:
    """The generator of one random stream of track `index`: streams never share draws."""
    return numpy_rng(seed, index, *stream)


def hz(pitch: float) -> float:
    """Frequency in Hz of a MIDI pitch (A4 = 69 = 440 Hz)."""
    return 440.0 * 2.0 ** ((pitch - 69) / 12)


def _nearest(pc: int, center: int) -> int:
    """MIDI note of pitch class `pc` closest to `center`."""
    return center + ((pc - center + 6) % 12) - 6


def plan_song(seed: int, index: int, min_seconds: float, max_seconds: float) -> SongPlan:
    """Draw song-level parameters for track `index` (1-based) from `(seed, index)` only."""
    rng = band_rng(seed, index, 0)
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


KICK, SNARE, HAT, OPEN_HAT, TOM, CRASH = 36, 38, 42, 46, 45, 49  # General MIDI percussion keys
_DRUM_RING_S = {CRASH: 2.0, OPEN_HAT: 0.8}  # note length of a hit (MIDI note-off); others ring for 0.5 s


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
        hits = [(b, KICK, 1.0) for b in kick] + [(b, SNARE, 0.9) for b in snare]
        hits += [(float(b), HAT, 0.6 if float(b) % 1 else 0.8) for b in hats]
        if fill:
            hits = [h for h in hits if h[0] < bpb - 1]
            hits += [(bpb - 1 + s / 4, (SNARE, TOM)[int(rng.integers(2))], 0.6 + 0.1 * s) for s in range(4)]
        if bar % 4 == 0 and bar > 0:
            hits.append((0, CRASH, 0.9))
        for beat, kind, vel in hits:
            notes.append(Note(_jitter(rng, plan.time(bar, float(beat))), _DRUM_RING_S.get(kind, 0.5), kind,
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


_PARTS: dict[str, Callable[[SongPlan, np.random.Generator], list[Note]]] = {
    "bass": _bass_part, "piano": _piano_part, "drums": _drum_part, "organ": _pad_part, "strings": _pad_part,
    "pad": _pad_part, "lead": _lead_part}


def compose_part(plan: SongPlan, family: str, style: str | None, rng: np.random.Generator,
                 dropout_prob: float) -> list[Note]:
    """The notes of one stem: the family's part (guitar: `style` strum | arpeggio | None = drawn), bars dropped
    with probability `dropout_prob` each. Draws from `rng` (the stem's own stream) in a fixed order."""
    notes = _guitar_part(plan, rng, style) if family == "guitar" else _PARTS[family](plan, rng)
    return _apply_dropout(plan, notes, dropout_prob, rng)


class StemSlot(NamedTuple):
    """One stem of a song's layout; `slot` keys the stem's own random stream."""

    slot: int
    family: str
    program: int  # General MIDI program (0 for drums: the kit is a renderer choice)
    style: str | None
    rendered: bool  # False: listed in metadata with `audio_rendered: false`, no audio file (MIDI only)


CORE_CLASSES = ("bass", "drums", "guitar", "piano")


def stem_layout(rng: np.random.Generator, *, programs: Mapping[str, Sequence[int]] | None = None,
                extra_stem_prob: float, double_stem_prob: float, unrendered_prob: float) -> list[StemSlot]:
    """The stems of one song, in a random order: the four core classes, maybe a second guitar or piano (another
    program), 1-2 extra stems of ignored classes, and an unrendered stem.

    Args:
        rng: the layout's own stream.
        programs: General MIDI program pools of bass / guitar / piano (default: the whole family). With the default
            pools the draws are those of earlier versions (same songs for the same seed).
        extra_stem_prob, double_stem_prob, unrendered_prob: probabilities per song.
    """
    pools = {f: tuple(programs[f]) if programs and f in programs else tuple(FAMILIES[f][1]) for f in FAMILIES}

    def program(family: str) -> int:
        return int(pools[family][int(rng.integers(len(pools[family])))])

    gtr_style = ("strum", "arpeggio")[int(rng.integers(2))]
    stems = [StemSlot(1, "bass", program("bass"), None, True), StemSlot(2, "drums", 0, None, True),
             StemSlot(3, "guitar", program("guitar"), gtr_style, True), StemSlot(4, "piano", program("piano"), None, True)]
    if rng.random() < double_stem_prob:  # one class split over two stems (the reader must sum them)
        family = ("guitar", "piano")[int(rng.integers(2))]
        first = stems[2 if family == "guitar" else 3].program
        other = [p for p in pools[family] if p != first] or [first]
        style = ("arpeggio" if gtr_style == "strum" else "strum") if family == "guitar" else None
        stems.append(StemSlot(5, family, int(other[int(rng.integers(len(other)))]), style, True))
    if rng.random() < extra_stem_prob:  # other classes, ignored by the 4-stem reader
        for k, family in enumerate(rng.permutation(EXTRA_FAMILIES)[: int(rng.integers(1, 3))]):
            stems.append(StemSlot(6 + k, str(family), program(str(family)), None, True))
    if rng.random() < unrendered_prob:  # listed in metadata with audio_rendered: false and no file
        family = ("bass", "guitar", "piano", "organ", "strings")[int(rng.integers(5))]
        stems.append(StemSlot(8, family, program(family), None, False))
    return [stems[int(i)] for i in rng.permutation(len(stems))]
