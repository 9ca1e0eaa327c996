"""Where segments start in a track, and cutting them (official_spec §1.4).

Validation and test use the fixed grid `k * L` from 0 (L = segment length). Training uses the official random shift:
for chunk k, `offset = k*L + shift` with `shift` uniform in `[-max_shift, max_shift)`; if the offset runs past
`D - L` it is pulled back by `L/2` (and floored at 0), and a negative offset becomes 0. We draw `views` independent
shifts per chunk, each from its own generator seeded by (seed, track id, view, chunk), so the training set is a
fixed, reproducible set of shifted views rather than a fresh draw per epoch (the price of precomputing latents).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtmusicldm.utils.rng import name_key, numpy_rng


@dataclass(frozen=True)
class SegmentSpec:
    view: int  # 0 for validation/test; 0..views-1 for training
    chunk: int  # index k of the grid chunk the segment belongs to
    offset: int  # start sample (may leave a zero-padded tail when the track ends early)


def track_seed(seed: int, track_id: str, *extra: int) -> np.random.Generator:
    """A generator that depends only on (seed, track id, extra...): independent of processing order."""
    return numpy_rng(seed, name_key(track_id), *extra)


def segment_offsets(n_samples: int, segment: int, *, train: bool, views: int, max_shift: int, seed: int,
                    track_id: str) -> list[SegmentSpec]:
    """Segment start offsets for a track of `n_samples` samples.

    Args:
        n_samples: track length (already capped at the maximum track length).
        segment: segment length L in samples.
        train: random shifts (training) or the fixed grid (validation/test).
        views: shifted views per chunk (training only).
        max_shift: shift bound in samples (official: L/2).

    Returns:
        Specs sorted by (chunk, view); empty when the track is shorter than one segment.
    """
    if segment <= 0:
        raise ValueError(f"segment must be > 0, got {segment}")
    n_chunks = n_samples // segment
    specs: list[SegmentSpec] = []
    for k in range(n_chunks):
        if not train:
            specs.append(SegmentSpec(view=0, chunk=k, offset=k * segment))
            continue
        for v in range(views):
            rng = track_seed(seed, track_id, v, k)
            shift = int(rng.integers(-max_shift, max_shift)) if max_shift > 0 else 0
            offset = k * segment + shift
            if offset > n_samples - segment:
                offset = max(0, offset - segment // 2)
            offset = max(0, offset)
            specs.append(SegmentSpec(view=v, chunk=k, offset=offset))
    return specs


def cut_segment(audio: np.ndarray, offset: int, segment: int) -> np.ndarray:
    """audio [S, T] -> [S, segment] starting at `offset`, zero-padded past the end."""
    out = np.zeros((audio.shape[0], segment), dtype=np.float32)
    piece = audio[:, offset:offset + segment]
    out[:, :piece.shape[1]] = piece
    return out


def rms_db(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """RMS in dBFS along `axis` (-inf-safe: silence gives -200 dB)."""
    rms = np.sqrt(np.mean(np.square(x, dtype=np.float64), axis=axis))
    return 20.0 * np.log10(np.maximum(rms, 1e-10))
