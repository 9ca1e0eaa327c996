"""Bootstrap intervals: the batched Fréchet distance, grouped resampling, paired sets and the interval rule."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from mtmusicldm.evaluation.bootstrap import (
    Resampled,
    fad_replicates,
    frechet_distance_batch,
    interval,
    mean_interval,
    resample,
)
from mtmusicldm.evaluation.fad import GaussianStats, RankDeficientWarning, fad_from_embeddings, frechet_distance


def _files(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> list[np.ndarray]:
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    return [rng.normal(size=(int(rng.integers(2, 5)), d)) @ mix + shift for _ in range(n)]


def test_batched_frechet_matches_scipy_sqrtm() -> None:
    rng = np.random.default_rng(0)
    for n, d in ((300, 8), (40, 24)):  # full rank, then rank-deficient (N < D + 1)
        x, y = rng.normal(size=(n, d)), rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + 0.3
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RankDeficientWarning)
            a, b = GaussianStats.from_embeddings(x), GaussianStats.from_embeddings(y)
        got = frechet_distance_batch(a.mu[None], a.sigma[None], b.mu[None], b.sigma[None])
        assert got.shape == (1,)
        assert got[0] == pytest.approx(frechet_distance(a.mu, a.sigma, b.mu, b.sigma), rel=1e-6)


def test_replicates_equal_fad_of_the_resampled_files() -> None:
    rng = np.random.default_rng(1)
    fa, fb = _files(rng, 12, 6), _files(rng, 10, 6, shift=0.5)
    ia, ib = resample(12, 5, seed=3), resample(10, 5, seed=4)
    reps = fad_replicates(Resampled(fa, ia), Resampled(fb, ib))
    for r in range(5):
        want = fad_from_embeddings(np.concatenate([fa[i] for i in ia[r]]), np.concatenate([fb[i] for i in ib[r]]))
        assert reps[r] == pytest.approx(want, rel=1e-6, abs=1e-9)


def test_paired_identical_sets_give_a_zero_interval() -> None:
    rng = np.random.default_rng(2)
    fa = _files(rng, 16, 4)
    idx = resample(16, 50, seed=0)
    reps = fad_replicates(Resampled(fa, idx), Resampled(fa, idx))
    assert np.allclose(reps, 0.0, atol=1e-8)
    ci = interval(0.0, reps, nonnegative=True)
    assert (ci.value, ci.low) == (0.0, 0.0) and ci.high < 1e-8
    assert fad_replicates(Resampled(fa, idx), Resampled(fa, resample(16, 50, seed=1))).mean() > 0.01  # independent


def test_resample_is_seeded() -> None:
    a = resample(7, 20, seed=5)
    assert a.shape == (20, 7) and a.min() >= 0 and a.max() < 7
    np.testing.assert_array_equal(a, resample(7, 20, seed=5))
    assert not np.array_equal(a, resample(7, 20, seed=6))
    with pytest.raises(ValueError, match="n >= 1"):
        resample(0, 10, seed=0)


def test_interval_is_bias_shifted_and_clipped() -> None:
    reps = np.array([2.0, 3.0, 4.0, 5.0, 6.0] * 40)  # mean 4: bias +1 over the estimate 3
    ci = interval(3.0, reps)
    lo, hi = np.quantile(reps, [0.025, 0.975]) - 1.0
    assert (ci.value, ci.low, ci.high) == (3.0, pytest.approx(lo), pytest.approx(hi))
    assert interval(0.5, reps, nonnegative=True).low == 0.0  # FAD intervals never go below 0
    assert np.isnan(interval(1.0, np.array([np.nan, 1.0])).low)  # too few finite replicates
    assert ci.overlaps(interval(4.5, reps)) and not ci.overlaps(interval(9.0, reps))


def test_mean_interval_covers_the_mean() -> None:
    v = np.random.default_rng(3).normal(1.0, 0.5, size=200)
    ci = mean_interval(np.r_[v, np.nan], n_boot=400, seed=0)
    assert ci.value == pytest.approx(v.mean())
    half = 1.96 * v.std(ddof=1) / np.sqrt(v.size)
    assert ci.low == pytest.approx(v.mean() - half, abs=0.03) and ci.high == pytest.approx(v.mean() + half, abs=0.03)
    assert np.isnan(mean_interval([np.nan], 10, 0).value)


def test_pair_replicates_match_the_resampled_matrix() -> None:
    from mtmusicldm.evaluation.bootstrap import pair_replicates

    s = np.random.default_rng(4).normal(size=(9, 9))
    idx = resample(9, 30, seed=2)
    matched, mismatched = pair_replicates(s, idx)
    for b in range(30):
        sub = s[np.ix_(idx[b], idx[b])]
        different = idx[b][:, None] != idx[b][None, :]
        assert matched[b] == pytest.approx(np.diag(sub).mean())
        assert mismatched[b] == pytest.approx(sub[different].mean())
    full = pair_replicates(s, np.arange(9)[None])
    assert full[0][0] == pytest.approx(np.diag(s).mean())
    assert full[1][0] == pytest.approx(s[~np.eye(9, dtype=bool)].mean())
