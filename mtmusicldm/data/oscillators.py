"""The oscillator renderer of the embedded band (the original test-signal voices, kept as `renderer: oscillators`).

Vectorised numpy synthesis of the composer's notes (`mtmusicldm.data.composer`): wavetable additive voices (bass,
piano, pads, lead), Karplus-Strong plucks (guitar) and noise/sweep drums. Deterministic for a stem's random stream;
cheap, but it sounds like a test signal: the default renderer is the SoundFont one (`mtmusicldm.data.soundfont`).
"""
from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.signal import butter, lfilter, sosfilt

from mtmusicldm.data.composer import CRASH, HAT, KICK, OPEN_HAT, SNARE, TOM, Note, hz

__all__ = ["render_oscillator_stem"]

_TABLE = 4096  # wavetable length
_CUTOFF_HZ = {"bass": (600.0, 3000.0), "piano": (2500.0, 9000.0)}


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
    nh = max(1, min(len(tim.bright), int(0.45 * sr / hz(pitch))))
    bright, dull = _wavetable(tim.bright[:nh]), _wavetable(tim.dull[:nh])
    n_on = max(1, int(dur * sr))
    n = n_on + max(1, int(tim.release * sr))
    t = np.arange(n) / sr
    x = (hz(pitch) * t) % 1.0 * _TABLE
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
    d = sr / hz(pitch)
    period = max(2, int(round(d - 0.5)))  # loop delay period + 0.5 (the two-point average adds half a sample)
    ratio = (period + 0.5) / d
    n_on = max(1, int(dur * sr))
    n = n_on + int(0.03 * sr)
    y = np.zeros(int(n * ratio) + period + 3)
    exc = lfilter([1.0 - bright], [1.0, -bright], rng.uniform(-1.0, 1.0, period + 1))
    y[: period + 1] = exc - exc.mean()
    g = 0.5 * 10.0 ** (-3.0 / (hz(pitch) * t60))
    for s in range(period + 1, y.size, period):
        e = min(s + period, y.size)
        y[s:e] = g * (y[s - period:e - period] + y[s - period - 1:e - period - 1])
    x = np.arange(n) * ratio
    i = x.astype(np.intp)
    out = y[i] + (x - i) * (y[i + 1] - y[i])
    out[n_on:] *= np.linspace(1.0, 0.0, n - n_on)
    return out / max(1e-9, float(np.abs(out).max()))


def _render(notes: Sequence[Note], make: Callable[[int, float], np.ndarray], n: int, sr: int,
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

    kit = {KICK: [sweep(f_kick, kick_tau, 0.5) + 0.1 * noise(0.004, 0.5, False) for _ in range(3)],
           TOM: [sweep(f_tom, 0.2, 0.4) for _ in range(3)],
           SNARE: [0.5 * sweep(float(rng.uniform(170, 230)), 0.06, 0.4) + noise(snare_tau, 0.4, False)
                    for _ in range(3)],
           HAT: [noise(hat_tau, 0.15, True) for _ in range(3)],
           OPEN_HAT: [noise(0.3, 0.6, True) for _ in range(3)]}
    kit = {k: [v / np.abs(v).max() for v in vs] for k, vs in kit.items()}
    kit[CRASH] = kit[OPEN_HAT]  # no cymbal voice: the crash plays the open hat
    return kit


def render_oscillator_stem(notes: Sequence[Note], family: str, program: int, sr: int, n: int,
                           rng: np.random.Generator) -> np.ndarray:
    """Synthesise one stem's notes; returns an un-normalised float64 `[n]` waveform.

    Args:
        notes: the composed part (`compose_part`), drawn from `rng` just before.
        family: bass | drums | guitar | piano | organ | strings | lead | pad.
        program: General MIDI program (picks the guitar's decay/brightness/overdrive, the timbre's tilt).
        sr, n: sample rate and length.
        rng: the stem's stream, continued after the composition (kit, timbre and pluck draws).
    """
    if family == "drums":
        kit = _drum_kit(sr, rng)
        return _render(notes, lambda p, _: kit[p][int(rng.integers(3))], n, sr, cache=False)
    if family == "guitar":
        t60 = float(rng.uniform(0.2, 0.35) if program == 28 else rng.uniform(0.8, 3.0))
        bright = float(rng.uniform(0.5, 0.7) if program == 24 else rng.uniform(0.05, 0.5))
        shift = 12 if program == 31 else 0
        y = _render(notes, lambda p, d: _pluck_note(sr, p + shift, d, t60, bright, rng), n, sr)
        if program in (29, 30):  # overdrive: soft clipping of the whole stem (chords intermodulate)
            drive = float(rng.uniform(3.0, 8.0))
            y = np.tanh(drive * y / max(1e-9, float(np.abs(y).max()))) / np.tanh(drive)
        return y
    tim = _timbre(family, program, rng)
    y = _render(notes, lambda p, d: _wavetable_note(tim, sr, p, d), n, sr)
    lo, hi = _CUTOFF_HZ.get(family, (2000.0, 8000.0))
    a = math.exp(-2.0 * math.pi * min(float(rng.uniform(lo, hi)), 0.45 * sr) / sr)  # one-pole low-pass
    return lfilter([1.0 - a], [1.0, -a], y)
