"""Fréchet distance: exact cases, an independent eigen-based computation, numerics and errors."""
from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest
from scipy import linalg

from mtmusicldm.evaluation import fad as fad_mod
from mtmusicldm.evaluation.fad import (
    GaussianStats,
    RankDeficientWarning,
    fad_from_embeddings,
    frechet_distance,
)


def _random_set(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return rng.normal(size=(n, d)) @ mix + rng.normal(size=d)


def _eig_frechet(x: np.ndarray, y: np.ndarray) -> float:
    """Independent formula: tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD matrix (eigh only)."""
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def test_identical_sets_give_zero() -> None:
    x = _random_set(np.random.default_rng(0), 300, 16)
    assert fad_from_embeddings(x, x) == pytest.approx(0.0, abs=1e-8)


def test_symmetric_and_matches_independent_eigen_formula() -> None:
    rng = np.random.default_rng(1)
    x, y = _random_set(rng, 400, 24), _random_set(rng, 350, 24)
    ab, ba = fad_from_embeddings(x, y), fad_from_embeddings(y, x)
    assert ab > 0.1
    assert ab == pytest.approx(ba, rel=1e-9, abs=1e-9)
    assert ab == pytest.approx(_eig_frechet(x, y), rel=1e-6, abs=1e-8)


def test_one_and_two_dimensional_closed_forms() -> None:
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance([1.0], [[4.0]], [3.0], [[9.0]]) == pytest.approx(4.0 + 1.0, abs=1e-12)
    # commuting (diagonal) 2-D covariances: sum over axes of the 1-D formula
    got = frechet_distance([0.0, 1.0], np.diag([1.0, 16.0]), [2.0, 1.0], np.diag([4.0, 1.0]))
    assert got == pytest.approx(4.0 + (1 - 2) ** 2 + (4 - 1) ** 2, abs=1e-12)


def test_mean_shift_gives_squared_norm() -> None:
    rng = np.random.default_rng(2)
    x = _random_set(rng, 200, 12)
    delta = rng.normal(size=12)
    assert fad_from_embeddings(x, x + delta) == pytest.approx(float(delta @ delta), rel=1e-9, abs=1e-9)


def test_gaussian_stats_are_unbiased_numpy_estimates() -> None:
    x = _random_set(np.random.default_rng(3), 50, 5)
    st = GaussianStats.from_embeddings(x)
    np.testing.assert_allclose(st.sigma, np.cov(x, rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(st.mu, x.mean(0), rtol=1e-12)
    assert st.n == 50 and st.dim == 5 and st.sigma.dtype == np.float64


def test_rank_deficient_sets_warn_and_stay_finite() -> None:
    rng = np.random.default_rng(4)
    x, y = _random_set(rng, 20, 64), _random_set(rng, 30, 64)  # N < D: singular covariances
    with pytest.warns(RankDeficientWarning, match="rank-deficient; need at least 65"):
        value = fad_from_embeddings(x, y)
    assert np.isfinite(value) and value > 0
    assert value == pytest.approx(_eig_frechet(x, y), rel=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficientWarning)
        assert fad_from_embeddings(x, x) == pytest.approx(0.0, abs=1e-6)


def test_too_few_samples_raise() -> None:
    with pytest.raises(ValueError, match="1 embeddings for 8 dimensions"):
        fad_from_embeddings(np.zeros((1, 8)), np.zeros((10, 8)))


def test_non_finite_and_shape_errors() -> None:
    x = np.random.default_rng(5).normal(size=(10, 3))
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fad_from_embeddings(bad, x)
    with pytest.raises(ValueError, match="dimensions differ"):
        fad_from_embeddings(x, x[:, :2])


def test_large_imaginary_component_is_an_error_naming_its_size() -> None:
    # sigma1 is not PSD: sqrt(-4) = 2i lands on the diagonal
    with pytest.raises(ValueError, match=r"imaginary component of 2"):
        frechet_distance(np.zeros(2), np.diag([1.0, -4.0]), np.zeros(2), np.eye(2))


def test_negative_results_clamp_or_raise(monkeypatch: pytest.MonkeyPatch) -> None:
    real_sqrtm = linalg.sqrtm
    monkeypatch.setattr(fad_mod.linalg, "sqrtm", lambda a: real_sqrtm(a) * (1 + 1e-9))
    assert frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3)) == 0.0  # -6e-9: rounding
    monkeypatch.setattr(fad_mod.linalg, "sqrtm", lambda a: real_sqrtm(a) * 1.5)
    with pytest.raises(ValueError, match="negative result"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3))


def test_non_finite_sqrtm_triggers_eps_retry(monkeypatch: pytest.MonkeyPatch) -> None:
    real_sqrtm = linalg.sqrtm
    calls: list[np.ndarray] = []

    def flaky(a: np.ndarray) -> np.ndarray:
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(fad_mod.linalg, "sqrtm", flaky)
    s = np.diag([1.0, 2.0])
    assert frechet_distance(np.zeros(2), s, np.zeros(2), s, eps=1e-6) == pytest.approx(0.0, abs=1e-9)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (s + 1e-6 * np.eye(2)) @ (s + 1e-6 * np.eye(2)))


def test_matches_frechet_audio_distance_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """Oracle: frechet-audio-distance 0.3.4's own `calculate_frechet_distance` (pytorch-fid's formula).

    Importing the package pulls laion-clap (slow, tries the hub) and encodec; neither is used by this function,
    so they are stubbed for the duration of the import.
    """
    for name in ("laion_clap", "encodec"):
        stub = types.ModuleType(name)
        stub.EncodecModel = None  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, name, stub)
    for name in [m for m in sys.modules if m.startswith("frechet_audio_distance")]:
        monkeypatch.delitem(sys.modules, name)
    try:
        from frechet_audio_distance.fad import FrechetAudioDistance
    except ImportError as e:  # pragma: no cover - the package is in the lock file
        pytest.skip(f"frechet_audio_distance not importable offline: {e}")
    rng = np.random.default_rng(6)
    x, y = _random_set(rng, 300, 32), _random_set(rng, 280, 32)
    a, b = GaussianStats.from_embeddings(x), GaussianStats.from_embeddings(y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # their sqrtm(disp=False)
        ref = FrechetAudioDistance.calculate_frechet_distance(None, a.mu, a.sigma, b.mu, b.sigma)
        mu_ref, sigma_ref = FrechetAudioDistance.calculate_embd_statistics(None, x)
    assert fad_from_embeddings(x, y) == pytest.approx(float(np.real(ref)), rel=1e-8)
    np.testing.assert_allclose(a.sigma, sigma_ref, rtol=1e-12)
    np.testing.assert_allclose(a.mu, mu_ref, rtol=1e-12)
    for name in [m for m in sys.modules if m.startswith("frechet_audio_distance")]:
        del sys.modules[name]  # do not leave a module bound to the stubs behind
