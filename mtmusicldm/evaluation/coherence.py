"""Cross-stem coherence metrics (our addition; the paper and its baselines report only FAD).

Both metrics compare each generated stem with the context it was generated for (e.g. the mix of the given stems)
and calibrate against mismatched pairings, so a model that ignores its context scores delta ~ 0:

* `rhythmic_coherence`: Pearson correlation of onset-strength envelopes (`librosa.onset.onset_strength`,
  1024-point window, 64 mels, hop 10 ms at 16 kHz) at lag 0, without the edge frames that see librosa's centre
  padding (otherwise every pair shares the same start transient).
* `harmonic_coherence`: cosine similarity of chroma (`librosa.feature.chroma_stft`, 4096-point FFT, hop 1024,
  tuning fixed at A440, flat octave weighting) either frame by frame (averaged over frames; follows chord
  changes) or of the time-averaged profiles (key level). Drums carry little pitch: use it on pitched stems.

With N items, the pair-score matrix S[i, j] = score(a_i, b_j) is computed once. `matched` is mean(diag S),
`shuffled` the mean of the off-diagonal entries (the exact expectation over random re-pairings), `delta` their
difference, and `z` = (matched - mean_null) / std_null from `n_shuffles` random derangements drawn from `seed`
(the null distribution of the mean matched score). Signals are cropped to the shortest item.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

__all__ = ["CoherenceResult", "chroma_features", "coherence_from_scores", "harmonic_coherence", "harmonic_scores",
           "onset_features", "rhythmic_coherence", "rhythmic_scores"]

ONSET_HOP = 160  # 10 ms at 16 kHz
ONSET_FFT, ONSET_MELS = 1024, 64  # 64 ms window: sharper envelopes than librosa's 2048 default at a 10 ms hop
CHROMA_FFT, CHROMA_HOP = 4096, 1024
_EPS = 1e-12


@dataclass(frozen=True)
class CoherenceResult:
    """Matched vs mismatched pair scores.

    Attributes:
        matched: mean score of the true pairs (a_i, b_i).
        shuffled: mean score over all mismatched pairs (a_i, b_j), i != j.
        delta: matched - shuffled (> 0: stems follow their own context).
        z: (matched - null mean) / null std over `n_shuffles` seeded derangements (nan if the null std is 0).
        n: number of items.
        per_item: [n] matched scores.
        scores: [n, n] pair scores, scores[i, j] = score(a_i, b_j) (bootstrap intervals resample it).
    """

    matched: float
    shuffled: float
    delta: float
    z: float
    n: int
    per_item: np.ndarray
    scores: np.ndarray


def _derangement(n: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform random permutation without fixed points (rejection sampling; acceptance ~ 1/e)."""
    while True:
        p = rng.permutation(n)
        if not np.any(p == np.arange(n)):
            return p


def coherence_from_scores(scores: np.ndarray, *, seed: int = 0, n_shuffles: int = 200) -> CoherenceResult:
    """Summarise a pair-score matrix.

    Args:
        scores: [N, N] with scores[i, j] = score(a_i, b_j), N >= 2.
        seed: seed of the derangements for `z`.
        n_shuffles: number of derangements.

    Returns:
        CoherenceResult.
    """
    s = np.asarray(scores, dtype=np.float64)
    n = s.shape[0]
    if s.ndim != 2 or s.shape != (n, n) or n < 2:
        raise ValueError(f"coherence: need a square score matrix with N >= 2 items, got shape {s.shape}")
    if n_shuffles < 2:
        raise ValueError(f"coherence: n_shuffles must be >= 2, got {n_shuffles}")
    diag = np.diag(s).copy()
    matched = float(diag.mean())
    shuffled = float((s.sum() - diag.sum()) / (n * (n - 1)))
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    null = np.array([s[idx, _derangement(n, rng)].mean() for _ in range(n_shuffles)])
    std = float(null.std(ddof=1))
    z = (matched - float(null.mean())) / std if std > _EPS else float("nan")
    return CoherenceResult(matched, shuffled, matched - shuffled, z, n, diag, s)


def _check_pairs(stems_a: Sequence[np.ndarray], stems_b: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    if len(stems_a) != len(stems_b):
        raise ValueError(f"coherence: {len(stems_a)} stems vs {len(stems_b)} references; they must pair up")
    if len(stems_a) < 2:
        raise ValueError(f"coherence: need at least 2 items to form mismatched pairs, got {len(stems_a)}")
    pairs = []
    for i, (a, b) in enumerate(zip(stems_a, stems_b)):
        a, b = np.asarray(a, dtype=np.float32), np.asarray(b, dtype=np.float32)
        for name, x in (("stems_a", a), ("stems_b", b)):
            if x.ndim != 1 or x.shape[0] == 0:
                raise ValueError(f"coherence: {name}[{i}] must be a non-empty [T] waveform, got shape {x.shape}")
            if not np.isfinite(x).all():
                raise ValueError(f"coherence: {name}[{i}] contains NaN or infinite samples")
        pairs.append((a, b))
    return pairs


def _features(stems_a: Sequence[np.ndarray], stems_b: Sequence[np.ndarray],
              fn: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Crop all signals to the shortest, apply `fn` ([T] -> [frames, ...]) and stack: two [N, frames, ...]."""
    pairs = _check_pairs(stems_a, stems_b)
    t = min(min(len(a), len(b)) for a, b in pairs)
    fa = np.stack([fn(a[:t]) for a, _ in pairs])
    fb = np.stack([fn(b[:t]) for _, b in pairs])
    return fa, fb


def _unit(x: np.ndarray, axis: int) -> np.ndarray:
    """x / ||x|| along `axis`; all-zero vectors stay zero (score 0)."""
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return np.where(norm > _EPS, x / np.maximum(norm, _EPS), 0.0)


def onset_features(y: np.ndarray, sr: int = 16000, *, hop_length: int = ONSET_HOP) -> np.ndarray:
    """Centred, unit-norm onset-strength envelope without the edge frames: [frames] (see the module docstring).

    Raises:
        ValueError: too short for an envelope beyond the edge frames.
    """
    import librosa

    edge = ONSET_FFT // hop_length + 2  # frames whose window (or its lag-1 neighbour) sees the centre padding
    e = librosa.onset.onset_strength(y=np.asarray(y, np.float32), sr=sr, n_fft=ONSET_FFT, hop_length=hop_length,
                                     n_mels=ONSET_MELS)
    if e.shape[0] <= 2 * edge + 2:
        raise ValueError(f"rhythmic_coherence: signals of {len(y)} samples are too short for onset envelopes")
    e = e[edge:-edge]
    return _unit(e - e.mean(), axis=0)


def chroma_features(y: np.ndarray, sr: int = 16000, *, n_fft: int = CHROMA_FFT,
                    hop_length: int = CHROMA_HOP) -> np.ndarray:
    """Frame-wise unit-norm chroma [frames, 12] (silent frames stay 0)."""
    import librosa

    # tuning fixed at A440 (no per-signal estimate); octwidth=None: flat weighting, so bass notes count too
    c = librosa.feature.chroma_stft(y=np.asarray(y, np.float32), sr=sr, n_fft=n_fft, hop_length=hop_length,
                                    norm=None, tuning=0.0, octwidth=None)  # [12, F]
    return c.T


def rhythmic_scores(fa: np.ndarray, fb: np.ndarray) -> np.ndarray:
    """Pair scores [N, N] (Pearson correlations) from `onset_features` stacks [N, frames]."""
    return fa @ fb.T


def harmonic_scores(fa: np.ndarray, fb: np.ndarray, mode: Literal["frames", "mean"] = "frames") -> np.ndarray:
    """Pair scores [N, N] (chroma cosines) from `chroma_features` stacks [N, frames, 12]."""
    if mode == "mean":
        return _unit(fa.mean(axis=1), axis=1) @ _unit(fb.mean(axis=1), axis=1).T
    return np.einsum("ifc,jfc->ij", _unit(fa, axis=2), _unit(fb, axis=2)) / fa.shape[1]


def rhythmic_coherence(stems_a: Sequence[np.ndarray], stems_b: Sequence[np.ndarray], sr: int = 16000, *,
                       hop_length: int = ONSET_HOP, seed: int = 0, n_shuffles: int = 200) -> CoherenceResult:
    """Onset-envelope correlation between each stem and its own context vs mismatched contexts.

    Args:
        stems_a: N generated stems, [T_i] each.
        stems_b: N references (e.g. mix of the given stems), [T_i] each, paired by index.
        sr: sample rate of both.
        hop_length: onset-envelope hop in samples (160 = 10 ms at 16 kHz).
        seed: derangement seed for `z`.
        n_shuffles: derangements for `z`.

    Returns:
        CoherenceResult of Pearson correlations (in [-1, 1]).
    """
    fa, fb = _features(stems_a, stems_b, lambda y: onset_features(y, sr, hop_length=hop_length))  # [N, F]
    return coherence_from_scores(rhythmic_scores(fa, fb), seed=seed, n_shuffles=n_shuffles)


def harmonic_coherence(stems_a: Sequence[np.ndarray], stems_b: Sequence[np.ndarray], sr: int = 16000, *,
                       mode: Literal["frames", "mean"] = "frames", n_fft: int = CHROMA_FFT,
                       hop_length: int = CHROMA_HOP, seed: int = 0, n_shuffles: int = 200) -> CoherenceResult:
    """Chroma cosine similarity between each stem and its own context vs mismatched contexts.

    Args:
        stems_a: N generated stems, [T_i] each.
        stems_b: N references, paired by index.
        sr: sample rate.
        mode: "frames" = mean over frames of the frame-wise cosine; "mean" = cosine of time-averaged chroma.
        n_fft, hop_length: chroma STFT parameters.
        seed: derangement seed for `z`.
        n_shuffles: derangements for `z`.

    Returns:
        CoherenceResult of cosines (in [0, 1]: chroma is non-negative; silent frames count as 0).
    """
    if mode not in ("frames", "mean"):
        raise ValueError(f"harmonic_coherence: mode must be 'frames' or 'mean', got {mode!r}")
    fa, fb = _features(stems_a, stems_b, lambda y: chroma_features(y, sr, n_fft=n_fft, hop_length=hop_length))
    return coherence_from_scores(harmonic_scores(fa, fb, mode), seed=seed, n_shuffles=n_shuffles)
