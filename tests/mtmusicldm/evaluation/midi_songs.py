"""Ground truth for the note-level tests: small 4-stem MIDI songs (pretty_midi) rendered with tinysoundfont through
pretty_midi's bundled General MIDI SoundFont (TimGM6mb.sf2). Both ship in registry wheels; nothing is downloaded."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pretty_midi

SR = 16000
SF2 = Path(pretty_midi.__file__).parent / "TimGM6mb.sf2"
PROGRAMS = {"bass": 33, "drums": 0, "guitar": 25, "piano": 0}  # GM: finger bass, steel guitar, grand piano
_PROGRESSIONS = ((0, 7, 9, 5), (0, 5, 7, 5), (9, 5, 0, 7), (2, 7, 0, 0))  # semitones above the key


def song(seed: int, seconds: float = 4.0, *, bass_offset: int = 0) -> dict[str, pretty_midi.Instrument]:
    """One song: bass on the chord roots (+ `bass_offset` semitones), piano triads, guitar arpeggio, drums.

    Every stem shares the seed's key, tempo and progression (one chord per bar).
    """
    rng = np.random.default_rng(seed)
    key, bpm = int(rng.integers(12)), float(rng.uniform(90, 140))
    beat, prog = 60.0 / bpm, _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
    inst = {name: pretty_midi.Instrument(program=p, is_drum=name == "drums", name=name)
            for name, p in PROGRAMS.items()}

    def note(name: str, pitch: int, start: float, dur: float, vel: int = 90) -> None:
        if start < seconds:
            inst[name].notes.append(pretty_midi.Note(vel, int(pitch), start, min(start + dur, seconds)))

    for b in range(int(seconds / beat) + 1):
        t, degree = b * beat, prog[(b // 4) % 4]
        third = 3 if degree == 9 else 4
        root = key + degree
        note("bass", 36 + root % 12 + bass_offset, t, 0.9 * beat, 100)
        note("drums", 36 if b % 2 == 0 else 38, t, 0.1)
        note("drums", 42, t + beat / 2, 0.05, 70)
        if b % 4 == 0:
            for iv in (0, third, 7):
                note("piano", 60 + (root + iv) % 12, t, 3.8 * beat, 75)
        note("guitar", 52 + (root + (0, third, 7, 12)[b % 4]) % 12, t + beat / 2, 0.45 * beat, 85)
    return inst


def render(instrument: pretty_midi.Instrument, seconds: float, sr: int = SR) -> np.ndarray:
    """[round(seconds * sr)] float32 mono rendering of one instrument."""
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=sr)
    sfid = synth.sfload(str(SF2))
    synth.program_select(0, sfid, 128 if instrument.is_drum else 0, instrument.program, is_drums=instrument.is_drum)
    events = sorted([(n.start, 1, n.pitch, n.velocity) for n in instrument.notes]
                    + [(n.end, 0, n.pitch, 0) for n in instrument.notes])
    total, done, parts = round(seconds * sr), 0, []
    for time_s, on, pitch, velocity in [*events, (seconds, -1, 0, 0)]:
        k = min(round(time_s * sr), total) - done
        if k > 0:
            parts.append(np.frombuffer(synth.generate_simple(k), dtype=np.float32).reshape(-1, 2).mean(axis=1))
            done += k
        if on == 1:
            synth.noteon(0, pitch, velocity)
        elif on == 0:
            synth.noteoff(0, pitch)
    out = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return np.pad(out, (0, total - out.size)).astype(np.float32)


def render_song(seed: int, seconds: float = 4.0, **kwargs: int) -> tuple[dict[str, np.ndarray],
                                                                         dict[str, pretty_midi.Instrument]]:
    """(stem -> [T] audio at 16 kHz, stem -> MIDI instrument) of `song(seed, seconds, **kwargs)`."""
    midi = song(seed, seconds, **kwargs)
    return {name: render(inst, seconds) for name, inst in midi.items()}, midi


def write_midi(instrument: pretty_midi.Instrument, path: Path) -> Path:
    """Write one instrument as a MIDI file (Slakh's `MIDI/SXX.mid`)."""
    pm = pretty_midi.PrettyMIDI()
    pm.instruments.append(instrument)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))
    return path
