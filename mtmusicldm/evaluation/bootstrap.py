"""95 % bootstrap intervals for FAD and per-item scores: items are resampled with replacement by a seeded generator.

* `resample(n, n_boot, seed)`: `[B, n]` item indices, row b = resample b (numpy `default_rng(seed)`).
* `fad_replicates`: the FAD of every resample of two embedding sets, grouped by file (all frames of a drawn file
  enter together). When the two sets hold the same items (e.g. generated item i and its target i), pass the same
  indices for both (paired resampling); otherwise independent ones.
* `interval(point, replicates)`: the percentile interval of the replicates shifted by the bootstrap's bias
  estimate (mean of the replicates minus the point estimate). Resampling with replacement leaves ~63 % distinct
  items, which inflates FAD's small-sample bias, so the plain percentile interval of FAD can lie entirely above the
  estimate; the shift centres it on the estimate again. FAD intervals are clipped at 0. For means of per-item
  scores the shift is ~0 and this is the plain percentile interval.

FAD of a resample is computed in closed form from per-file sums (mean and unbiased covariance of the pooled frames)
and `tr sqrtm(S1 S2) = sum sqrt(eig(R1 S2 R1))` with `R1 = S1^(1/2)`: the same quantity as
`fad.frechet_distance` (scipy sqrtm, used for the point estimates), batched and robust to the rank-deficient
covariances small sets give.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "fad_replicates", "frechet_distance_batch", "interval", "mean_interval", "pair_replicates",
           "resample"]

LEVEL = 0.95
_CHUNK = 64  # replicates per batched covariance (memory: CHUNK * D^2 float64)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its 95 % bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self, digits: int = 6) -> dict[str, float]:
        return {"value": round(self.value, digits), "low": round(self.low, digits), "high": round(self.high, digits)}

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high


def resample(n: int, n_boot: int, seed: int) -> np.ndarray:
    """`[n_boot, n]` indices drawn uniformly with replacement from `range(n)`."""
    if n < 1 or n_boot < 1:
        raise ValueError(f"resample: need n >= 1 and n_boot >= 1, got {n} and {n_boot}")
    return np.random.default_rng(seed).integers(0, n, size=(n_boot, n))


def interval(point: float, replicates: np.ndarray, *, nonnegative: bool = False) -> Interval:
    """Bias-shifted 95 % percentile interval (see the module docstring).

    Args:
        point: the estimate on the full sample.
        replicates: `[B]` estimates on the resamples (non-finite ones are dropped).
        nonnegative: clip the interval at 0 (FAD).
    """
    r = np.asarray(replicates, dtype=np.float64)
    r = r[np.isfinite(r)]
    if r.size < 2:
        return Interval(float(point), float("nan"), float("nan"))
    bias = float(r.mean()) - float(point)
    lo, hi = np.quantile(r, [(1 - LEVEL) / 2, (1 + LEVEL) / 2]) - bias
    if nonnegative:
        lo, hi = max(0.0, lo), max(0.0, hi)
    return Interval(float(point), float(min(lo, point)), float(max(hi, point)))


def mean_interval(values: Sequence[float] | np.ndarray, n_boot: int, seed: int) -> Interval:
    """Mean of per-item values with its 95 % interval (NaN items are left out first)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"))
    return interval(float(v.mean()), v[resample(v.size, n_boot, seed)].mean(axis=1))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square roots of `[B, D, D]` PSD matrices (negative rounding eigenvalues clipped)."""
    w, u = np.linalg.eigh(s)
    return (u * np.sqrt(np.clip(w, 0.0, None))[:, None, :]) @ np.swapaxes(u, 1, 2)


def frechet_distance_batch(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> np.ndarray:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}) for stacks: mu [B, D], S [B, D, D] -> [B] (>= 0)."""
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    m = 0.5 * (m + np.swapaxes(m, 1, 2))
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(m), 0.0, None)).sum(axis=1)
    diff = mu1 - mu2
    out = (diff * diff).sum(axis=1) + np.trace(s1, axis1=1, axis2=2) + np.trace(s2, axis1=1, axis2=2) - 2 * tr_sqrt
    return np.maximum(out, 0.0)


def _file_sums(files: Sequence[np.ndarray], shift: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per file: frame count [N], sum [N, D] and sum of outer products [N, D*D] of (frames - shift)."""
    counts = np.array([f.shape[0] for f in files], dtype=np.float64)
    centred = [np.asarray(f, np.float64) - shift for f in files]
    sums = np.stack([c.sum(axis=0) for c in centred])
    outer = np.stack([(c.T @ c).reshape(-1) for c in centred])
    return counts, sums, outer


def _stats(weights: np.ndarray, counts: np.ndarray, sums: np.ndarray, outer: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pooled-frame mean [B, D] and unbiased covariance [B, D, D] per row of file weights [B, N]; frames [B]."""
    n = weights @ counts
    mu = (weights @ sums) / n[:, None]
    d = mu.shape[1]
    second = (weights @ outer).reshape(-1, d, d)
    cov = (second - n[:, None, None] * mu[:, :, None] * mu[:, None, :]) / np.maximum(n - 1, 1)[:, None, None]
    return mu, 0.5 * (cov + np.swapaxes(cov, 1, 2)), n


def fad_replicates(files_a: Sequence[np.ndarray], files_b: Sequence[np.ndarray], idx_a: np.ndarray,
                   idx_b: np.ndarray) -> np.ndarray:
    """FAD of every resample.

    Args:
        files_a: per-file embeddings of set A, each [frames_i, D].
        files_b: per-file embeddings of set B, each [frames_j, D].
        idx_a: [B, N_a] file indices into `files_a` (from `resample`).
        idx_b: [B, N_b] file indices into `files_b` (the same array as `idx_a` for paired sets).

    Returns:
        [B] FAD values (NaN where a resample has fewer than 2 frames).
    """
    shift = np.concatenate([np.asarray(f, np.float64) for f in files_b]).mean(axis=0)  # less cancellation
    sa, sb = _file_sums(files_a, shift), _file_sums(files_b, shift)
    out = []
    for start in range(0, idx_a.shape[0], _CHUNK):
        wa = np.stack([np.bincount(r, minlength=len(files_a)) for r in idx_a[start:start + _CHUNK]]).astype(float)
        wb = np.stack([np.bincount(r, minlength=len(files_b)) for r in idx_b[start:start + _CHUNK]]).astype(float)
        mu1, c1, n1 = _stats(wa, *sa)
        mu2, c2, n2 = _stats(wb, *sb)
        value = frechet_distance_batch(mu1, c1, mu2, c2)
        out.append(np.where((n1 >= 2) & (n2 >= 2), value, np.nan))
    return np.concatenate(out)


def pair_replicates(scores: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Matched and mismatched mean pair scores of every resample of a pair-score matrix.

    Args:
        scores: [N, N], scores[i, j] = score(stem_i, context_j) (see `coherence`).
        idx: [B, N] item indices (from `resample`).

    Returns:
        ([B] mean of scores[k, k] over the drawn items, [B] mean of scores[k, l] over drawn pairs of different
        items, NaN when a resample drew a single item).
    """
    s = np.asarray(scores, dtype=np.float64)
    counts = np.stack([np.bincount(r, minlength=s.shape[0]) for r in idx]).astype(np.float64)  # [B, N]
    diag = np.diag(s)
    matched = (counts @ diag) / idx.shape[1]
    same = (counts**2) @ diag
    pairs = idx.shape[1] ** 2 - (counts**2).sum(axis=1)
    total = np.einsum("bi,ij,bj->b", counts, s, counts)
    with np.errstate(invalid="ignore", divide="ignore"):
        mismatched = np.where(pairs > 0, (total - same) / pairs, np.nan)
    return matched, mismatched
