"""Fréchet distance between Gaussian fits of embedding sets (pure math, no I/O).

The Fréchet (2-Wasserstein) distance between N(mu1, S1) and N(mu2, S2) is

    d^2 = ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^{1/2}),

the quantity audioldm_eval (and pytorch-fid, which it adapts) reports as FAD/FID. As there, the square root is
`scipy.linalg.sqrtm` of the (non-symmetric) product, covariances are the unbiased `np.cov(rowvar=False)` estimates
and the result is *not* square-rooted.

Numerical policy (differences to the reference noted):
* When sqrtm reports a singular/ill-conditioned product or returns non-finite values, `eps * I` is added to both
  covariances and sqrtm is retried (the reference only retries on non-finite values; the added term changes the
  result by O(eps * D), about 1e-4 for VGGish's 128 dims, far below the reported precision).
* An imaginary part of the square root's diagonal above `imag_atol` (1e-3, as the reference) is an error that names
  its size; a smaller one is discarded.
* A result in [-tol, 0) is rounding and returns 0.0; a more negative one is an error (it is impossible in exact
  arithmetic), with `tol = 1e-6 * (1 + tr S1 + tr S2 + ||mu1 - mu2||^2)`.
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import linalg

__all__ = [
    "GaussianStats",
    "RankDeficientWarning",
    "check_sample_count",
    "fad_from_embeddings",
    "fad_from_stats",
    "frechet_distance",
]

_log = logging.getLogger(__name__)

DEFAULT_EPS = 1e-6
"""Diagonal offset added to both covariances when the product is (near-)singular (pytorch-fid's value)."""
IMAG_ATOL = 1e-3
"""Largest imaginary part of diag(sqrtm(S1 S2)) that is discarded as rounding (pytorch-fid's value)."""


class RankDeficientWarning(UserWarning):
    """Fewer than D+1 embeddings: the covariance estimate is singular, the Fréchet distance is biased/unstable."""


def check_sample_count(n: int, dim: int, *, what: str = "embedding set") -> None:
    """Validate the number of embeddings behind a covariance estimate.

    Args:
        n: number of embeddings (rows).
        dim: embedding dimension D.
        what: label used in messages.

    Raises:
        ValueError: n < 2 (no unbiased covariance exists).

    Warns:
        RankDeficientWarning: 2 <= n < D + 1 (rank-deficient covariance).
    """
    if n < 2:
        raise ValueError(
            f"{what}: {n} embeddings for {dim} dimensions: a covariance needs at least 2 "
            f"(and at least {dim + 1} for a full-rank estimate)"
        )
    if n < dim + 1:
        warnings.warn(
            f"{what}: {n} embeddings for {dim} dimensions: the covariance is rank-deficient; need at least "
            f"{dim + 1} for a full-rank estimate (the distance is still computed, but biased and noisy)",
            RankDeficientWarning,
            stacklevel=3,
        )


@dataclass(frozen=True)
class GaussianStats:
    """Mean and unbiased covariance of an embedding set.

    Attributes:
        mu: [D] float64 mean.
        sigma: [D, D] float64 covariance, `np.cov(x, rowvar=False)` (divides by n - 1).
        n: number of embeddings it was estimated from.
    """

    mu: np.ndarray
    sigma: np.ndarray
    n: int

    def __post_init__(self) -> None:
        mu, sigma = np.asarray(self.mu), np.asarray(self.sigma)
        if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
            raise ValueError(f"GaussianStats: expected mu [D] and sigma [D, D], got {mu.shape} and {sigma.shape}")

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    @classmethod
    def from_embeddings(cls, x: np.ndarray, *, what: str = "embedding set") -> GaussianStats:
        """Fit a Gaussian to embeddings.

        Args:
            x: [N, D] embeddings (any float dtype; computed in float64).
            what: label for error messages.

        Returns:
            GaussianStats with n = N.

        Raises:
            ValueError: not 2-D, non-finite values, or N < 2 (warns `RankDeficientWarning` for N < D + 1).
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] == 0:
            raise ValueError(f"{what}: expected embeddings [N, D] with D > 0, got shape {x.shape}")
        if not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).any(axis=1).sum())
            raise ValueError(f"{what}: {bad} of {x.shape[0]} embeddings contain NaN or infinite values")
        check_sample_count(x.shape[0], x.shape[1], what=what)
        return cls(mu=x.mean(axis=0), sigma=np.atleast_2d(np.cov(x, rowvar=False)), n=int(x.shape[0]))


def _sqrtm_product(sigma1: np.ndarray, sigma2: np.ndarray) -> tuple[np.ndarray, bool]:
    """sqrtm(sigma1 @ sigma2); second value True when sqrtm flagged it singular/ill-conditioned or non-finite."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    flagged = any(issubclass(w.category, linalg.LinAlgWarning) for w in caught)
    return covmean, flagged or not np.isfinite(covmean).all()


def frechet_distance(
    mu1: np.ndarray,
    sigma1: np.ndarray,
    mu2: np.ndarray,
    sigma2: np.ndarray,
    *,
    eps: float = DEFAULT_EPS,
    imag_atol: float = IMAG_ATOL,
) -> float:
    """Fréchet distance ||mu1 - mu2||^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2}) between two Gaussians.

    Args:
        mu1: [D] mean of set 1.
        sigma1: [D, D] covariance of set 1.
        mu2: [D] mean of set 2.
        sigma2: [D, D] covariance of set 2.
        eps: diagonal offset for the singular-product retry (see module docstring).
        imag_atol: largest discarded imaginary part of the square root's diagonal.

    Returns:
        The squared distance (>= 0) as a Python float.

    Raises:
        ValueError: shape mismatch, non-finite inputs, a large imaginary component (its size is named), or a
            clearly negative result.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.ndim != 1 or mu2.shape != mu1.shape:
        raise ValueError(f"frechet_distance: mean shapes differ or are not [D]: {mu1.shape} vs {mu2.shape}")
    if sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(f"frechet_distance: covariances must be [{d}, {d}], got {sigma1.shape} and {sigma2.shape}")
    for name, arr in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(arr).all():
            raise ValueError(f"frechet_distance: {name} contains NaN or infinite values")

    diff = mu1 - mu2
    covmean, singular = _sqrtm_product(sigma1, sigma2)
    if singular:
        _log.info("frechet_distance: singular/ill-conditioned covariance product; adding %g to the diagonals", eps)
        offset = np.eye(d) * eps
        sigma1, sigma2 = sigma1 + offset, sigma2 + offset
        covmean, _ = _sqrtm_product(sigma1, sigma2)
        if not np.isfinite(covmean).all():
            raise ValueError(f"frechet_distance: sqrtm is non-finite even after adding {eps} to the diagonals")

    if np.iscomplexobj(covmean):
        imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if imag > imag_atol:
            raise ValueError(
                f"frechet_distance: sqrtm(S1 S2) has an imaginary component of {imag:.3g} on its diagonal "
                f"(> {imag_atol}); the covariances are probably not positive semi-definite"
            )
        covmean = covmean.real

    scale = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2))
    value = scale - 2.0 * float(np.trace(covmean))
    if value < 0.0:
        tol = 1e-6 * (1.0 + scale)
        if value < -tol:
            raise ValueError(f"frechet_distance: negative result {value:.6g} beyond rounding tolerance {tol:.3g}")
        value = 0.0
    return value


def fad_from_stats(a: GaussianStats, b: GaussianStats, **kwargs: float) -> float:
    """Fréchet distance between two fitted Gaussians (`kwargs` go to `frechet_distance`)."""
    if a.dim != b.dim:
        raise ValueError(f"fad_from_stats: embedding dimensions differ ({a.dim} vs {b.dim})")
    return frechet_distance(a.mu, a.sigma, b.mu, b.sigma, **kwargs)


def fad_from_embeddings(a: np.ndarray, b: np.ndarray, **kwargs: float) -> float:
    """Fréchet audio distance between two embedding sets (frames pooled over files).

    Args:
        a: [N, D] embeddings of set A (e.g. generated).
        b: [M, D] embeddings of set B (e.g. reference).
        **kwargs: `eps`, `imag_atol` for `frechet_distance`.

    Returns:
        FAD as a float (>= 0).

    Raises:
        ValueError: see `GaussianStats.from_embeddings` and `frechet_distance`.
    """
    return fad_from_stats(
        GaussianStats.from_embeddings(a, what="set A"), GaussianStats.from_embeddings(b, what="set B"), **kwargs
    )
