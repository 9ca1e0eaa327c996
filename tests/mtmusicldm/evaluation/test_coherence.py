"""Rhythmic / harmonic coherence: related stems beat shuffled pairings, unrelated noise gives delta ~ 0."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from mtmusicldm.evaluation import coherence_from_scores, harmonic_coherence, rhythmic_coherence

SR = 16000
BASS, DRUMS, GUITAR, PIANO = range(4)


@pytest.fixture(scope="module")
def songs(song_factory: Callable[[int, float], list[np.ndarray]]) -> list[list[np.ndarray]]:
    return [song_factory(100 + i, 3.0) for i in range(8)]


def _stem_vs_context(songs: list[list[np.ndarray]], k: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return [s[k] for s in songs], [np.sum([s[j] for j in range(4) if j != k], axis=0) for s in songs]


def test_score_summary_on_known_matrix() -> None:
    r = coherence_from_scores(np.eye(5), seed=0)
    assert (r.matched, r.shuffled, r.delta, r.n) == (1.0, 0.0, 1.0, 5)
    assert np.isnan(r.z)  # derangements of the identity always score 0: no spread
    s = np.random.default_rng(0).normal(size=(6, 6))
    a, b = coherence_from_scores(s, seed=3), coherence_from_scores(s, seed=3)
    assert a.z == b.z and a.z != coherence_from_scores(s, seed=4).z
    assert a.shuffled == pytest.approx((s.sum() - np.trace(s)) / 30)


@pytest.mark.parametrize("k", [BASS, DRUMS, GUITAR, PIANO])
def test_rhythm_follows_the_song(songs: list[list[np.ndarray]], k: int) -> None:
    r = rhythmic_coherence(*_stem_vs_context(songs, k), SR)
    assert r.delta > 0.2 and r.z > 3.0, r


@pytest.mark.parametrize("k", [BASS, GUITAR, PIANO])
def test_harmony_follows_the_song(songs: list[list[np.ndarray]], k: int) -> None:
    a, b = _stem_vs_context(songs, k)
    frames = harmonic_coherence(a, b, SR)
    assert frames.delta > 0.1 and frames.z > 3.0, frames
    assert harmonic_coherence(a, b, SR, mode="mean").delta > 0.05


def test_unrelated_noise_scores_zero_delta() -> None:
    rng = np.random.default_rng(0)
    a = [rng.normal(size=3 * SR).astype(np.float32) for _ in range(8)]
    b = [rng.normal(size=3 * SR).astype(np.float32) for _ in range(8)]
    r, h = rhythmic_coherence(a, b, SR), harmonic_coherence(a, b, SR)
    assert abs(r.delta) < 0.05 and abs(r.matched) < 0.1, r
    assert abs(h.delta) < 0.01, h


def test_deterministic_and_validated(songs: list[list[np.ndarray]]) -> None:
    a, b = _stem_vs_context(songs, GUITAR)
    r1, r2 = harmonic_coherence(a, b, SR, seed=5), harmonic_coherence(a, b, SR, seed=5)
    assert r1.z == r2.z and r1.matched == r2.matched
    np.testing.assert_array_equal(r1.per_item, r2.per_item)
    with pytest.raises(ValueError, match="must pair up"):
        rhythmic_coherence(a, b[:-1], SR)
    with pytest.raises(ValueError, match="at least 2 items"):
        harmonic_coherence(a[:1], b[:1], SR)
    with pytest.raises(ValueError, match=r"stems_a\[0\].*NaN"):
        rhythmic_coherence([np.full(SR, np.nan, np.float32), a[1]], b[:2], SR)
    with pytest.raises(ValueError, match="mode"):
        harmonic_coherence(a, b, SR, mode="median")  # type: ignore[arg-type]
