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
and `tr sqrtm(S1 S2) = sum sqrt(eig(R2 S1 R2))` with `R2 = S2^(1/2)`: the same quantity as
`fad.frechet_distance` (scipy sqrtm, used for the point estimates), batched, robust to the rank-deficient
covariances small sets give, and with the reference set's roots computed once for all rows that share it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Interval", "Resampled", "fad_replicates", "frechet_distance_batch", "interval", "mean_interval",
           "pair_replicates", "psd_sqrt", "resample"]

LEVEL = 0.95
_CHUNK = 64  # replicates per batched covariance (memory: CHUNK * D^2 float64)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its 95 % bootstrap interval."""

    value: float
    low: float
    high: float

    def as_dict(self, digits: int = 6) -> dict[str, float | None]:
        """{"value", "low", "high"} rounded; non-finite numbers become None (JSON has no NaN)."""
        return {k: round(v, digits) if np.isfinite(v) else None
                for k, v in (("value", self.value), ("low", self.low), ("high", self.high))}

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


def psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square roots of `[B, D, D]` PSD matrices (negative rounding eigenvalues clipped)."""
    w, u = np.linalg.eigh(s)
    return (u * np.sqrt(np.clip(w, 0.0, None))[:, None, :]) @ np.swapaxes(u, 1, 2)


def frechet_distance_batch(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray,
                           root2: np.ndarray | None = None) -> np.ndarray:
    """||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}) for stacks: mu [B, D], S [B, D, D] -> [B] (>= 0).

    `tr (S1 S2)^{1/2} = sum sqrt(eig(R2 S1 R2))` with `R2 = S2^{1/2}` (`root2`, computed when not given: pass it
    to reuse one reference set's roots across many comparisons)."""
    r2 = psd_sqrt(s2) if root2 is None else root2
    m = r2 @ s1 @ r2
    m = 0.5 * (m + np.swapaxes(m, 1, 2))
    tr_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(m), 0.0, None)).sum(axis=1)
    diff = mu1 - mu2
    out = (diff * diff).sum(axis=1) + np.trace(s1, axis1=1, axis2=2) + np.trace(s2, axis1=1, axis2=2) - 2 * tr_sqrt
    return np.maximum(out, 0.0)


class Resampled:
    """Pooled-frame mean and unbiased covariance of one embedding set in every bootstrap resample.

    Args:
        files: per-file embeddings, each [frames_i, D]; all frames of a drawn file enter together.
        idx: [B, N] file indices (from `resample`).

    Attributes:
        mu: [B, D] means; cov: [B, D, D] covariances; n: [B] frame counts.
    """

    def __init__(self, files: Sequence[np.ndarray], idx: np.ndarray) -> None:
        shift = np.concatenate([np.asarray(f, np.float64) for f in files]).mean(axis=0)  # less cancellation
        counts = np.array([f.shape[0] for f in files], dtype=np.float64)
        centred = [np.asarray(f, np.float64) - shift for f in files]
        sums = np.stack([c.sum(axis=0) for c in centred])  # [N, D]
        outer = np.stack([(c.T @ c).reshape(-1) for c in centred])  # [N, D*D]
        w = np.stack([np.bincount(r, minlength=len(files)) for r in idx]).astype(np.float64)  # [B, N]
        self.n = w @ counts
        mu = (w @ sums) / self.n[:, None]
        d = mu.shape[1]
        cov = ((w @ outer).reshape(-1, d, d) - self.n[:, None, None] * mu[:, :, None] * mu[:, None, :]) \
            / np.maximum(self.n - 1, 1)[:, None, None]
        self.mu, self.cov = mu + shift, 0.5 * (cov + np.swapaxes(cov, 1, 2))
        self._root: np.ndarray | None = None

    @property
    def root(self) -> np.ndarray:
        """[B, D, D] symmetric square roots of the covariances (computed once)."""
        if self._root is None:
            self._root = np.concatenate([psd_sqrt(self.cov[i:i + _CHUNK]) for i in range(0, len(self.cov), _CHUNK)])
        return self._root


def fad_replicates(a: Resampled, b: Resampled) -> np.ndarray:
    """FAD of every resample: [B] (NaN where a resample has fewer than 2 frames); `b`'s roots are reused."""
    out = [frechet_distance_batch(a.mu[i:i + _CHUNK], a.cov[i:i + _CHUNK], b.mu[i:i + _CHUNK], b.cov[i:i + _CHUNK],
                                  b.root[i:i + _CHUNK]) for i in range(0, len(a.mu), _CHUNK)]
    return np.where((a.n >= 2) & (b.n >= 2), np.concatenate(out), np.nan)


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
