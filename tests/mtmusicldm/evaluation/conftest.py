"""Tiny synthetic 4-stem "songs" (harmonic tones + rhythmic clicks) for the evaluation tests."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

SR = 16000
_MAJOR = (0, 4, 7)
_MINOR = (0, 3, 7)
_PROGRESSIONS = ((0, 7, 9, 5), (0, 5, 7, 5), (9, 5, 0, 7), (0, 9, 5, 7))  # I-V-vi-IV etc., semitones above key


def _hz(midi: float) -> float:
    return 440.0 * 2.0 ** ((midi - 69.0) / 12.0)


def _tone(midi: float, dur_s: float, partials: int, decay_s: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(dur_s * SR)) / SR
    f = _hz(midi)
    y = sum(np.sin(2 * np.pi * f * k * t + rng.uniform(0, 2 * np.pi)) / k for k in range(1, partials + 1)
            if f * k < SR / 2 - 500)
    return (y * np.exp(-t / decay_s)).astype(np.float64)


def _place(out: np.ndarray, event: np.ndarray, t_s: float, gain: float) -> None:
    i = int(round(t_s * SR))
    if i >= len(out):
        return
    n = min(len(event), len(out) - i)
    out[i : i + n] += gain * event[:n]


def make_song(seed: int, seconds: float = 4.0) -> list[np.ndarray]:
    """Stems [bass, drums, guitar, piano] of one song sharing tempo, key and chords: 4 x [T] float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SR)
    bpm = rng.uniform(80, 160)
    beat = 60.0 / bpm
    key = int(rng.integers(12))
    prog = _PROGRESSIONS[int(rng.integers(len(_PROGRESSIONS)))]
    stems = [np.zeros(n) for _ in range(4)]
    n_beats = int(seconds / beat) + 1
    for b in range(n_beats):
        t = b * beat
        degree = prog[(b // 4) % 4]
        quality = _MINOR if degree == 9 else _MAJOR
        root = key + degree
        _place(stems[0], _tone(36 + root % 12, beat, 3, 0.25, rng), t, 0.5)  # bass: root every beat
        kick = _tone(31, 0.12, 1, 0.04, rng)
        if b % 2 == 0:
            _place(stems[1], kick, t, 0.8)
        else:
            snare = rng.normal(size=int(0.1 * SR)) * np.exp(-np.arange(int(0.1 * SR)) / (0.03 * SR))
            _place(stems[1], snare, t, 0.3)
        for h in range(2):  # hi-hats on eighths
            hat = rng.normal(size=int(0.03 * SR)) * np.exp(-np.arange(int(0.03 * SR)) / (0.005 * SR))
            _place(stems[1], np.diff(hat, prepend=0.0), t + h * beat / 2, 0.2)
        if b % 2 == 0:  # guitar: strummed triad every 2 beats
            for j, iv in enumerate(quality):
                _place(stems[2], _tone(48 + (root + iv) % 12, 2 * beat, 5, 0.5, rng), t + 0.01 * j, 0.15)
        for iv in quality:  # piano: triad on the off-beat
            _place(stems[3], _tone(60 + (root + iv) % 12, beat, 3, 0.3, rng), t + beat / 2, 0.12)
    return [s.astype(np.float32) for s in stems]


@pytest.fixture(scope="session")
def song_factory() -> Callable[[int, float], list[np.ndarray]]:
    return make_song
