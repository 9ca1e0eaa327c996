"""Known masks over stem x time, and the waveform-domain replacement of the given audio.

A known mask is ``[B, S]`` (whole stems: arrangement) or ``[B, S, T']`` at latent time resolution (one latent
frame = 4 mel frames = :data:`~mtmusicldm.geometry.FRAME_SAMPLES` = 640 samples): continuation (the first seconds
known) and infill, built by :func:`time_mask`. Known samples stay bit-identical; on the generated side of a
boundary the given audio is cross-faded out over ``fade_samples`` (the generated audio fades in): no click.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from mtmusicldm.geometry import FRAME_SAMPLES, SAMPLE_RATE

DEFAULT_FADE_SAMPLES = 320
"""Cross-fade at time-mask boundaries (20 ms)."""


def time_mask(spans: Sequence[tuple[float, float | None]], n_frames: int, *, stems_known: Sequence[str],
              stems: Sequence[str], batch: int = 1, sample_rate: int = SAMPLE_RATE) -> Tensor:
    """Known mask ``[B, S, T']`` from time spans in seconds (continuation: ``[(0, k)]``; infill: two spans).

    A latent frame ``f`` (samples ``[640 f, 640 (f + 1))``) is known iff it lies entirely inside a span
    ``[start, end)`` (``end=None``: to the end), and only for ``stems_known``. OR it with a stem mask
    (``stem_mask(...)[:, :, None]``) to keep whole stems as well.
    """
    unknown = sorted(set(stems_known) - set(stems))
    if unknown:
        raise ValueError(f"unknown stems {unknown}; stems are {list(stems)}")
    starts = torch.arange(n_frames, dtype=torch.float64) * FRAME_SAMPLES
    frames = torch.zeros(n_frames, dtype=torch.bool)
    for start, end in spans:
        lo = start * sample_rate
        hi = float("inf") if end is None else end * sample_rate
        if end is not None and end < start:
            raise ValueError(f"time span ({start}, {end}) ends before it starts")
        frames |= (starts >= lo - 1e-6) & (starts + FRAME_SAMPLES <= hi + 1e-6)
    mask = torch.zeros(batch, len(stems), n_frames, dtype=torch.bool)
    for name in stems_known:
        mask[:, list(stems).index(name)] = frames
    return mask


def known_samples(mask: Tensor, n_stems: int, n_samples: int) -> Tensor:
    """Known mask ``[B, S]`` / ``[B, S, T']`` -> per-sample bool ``[B, S, n_samples]``."""
    if mask.ndim == 2:
        return mask[:, :, None].expand(-1, n_stems, n_samples).clone()
    per_sample = mask.repeat_interleave(FRAME_SAMPLES, dim=-1)[..., :n_samples]
    return torch.nn.functional.pad(per_sample, (0, n_samples - per_sample.shape[-1]))


def _distance_to_known(known: np.ndarray) -> np.ndarray:
    """Samples to the nearest known sample along the last axis (inf when a row has none)."""
    n = known.shape[-1]
    idx = np.arange(n, dtype=np.float64)
    last = np.maximum.accumulate(np.where(known, idx, -np.inf), axis=-1)
    nxt = np.minimum.accumulate(np.where(known, idx, np.inf)[..., ::-1], axis=-1)[..., ::-1]
    return np.minimum(idx - last, nxt - idx)


def replace_given(generated: Tensor, given: Tensor, known: Tensor, fade_samples: int = DEFAULT_FADE_SAMPLES) -> Tensor:
    """Waveform-domain replacement (official spec 8): known samples are the given audio, bit-identically.

    Generated samples within ``fade_samples`` of a known sample mix the given audio out linearly
    (``w = 1 - d / (fade + 1)`` at distance ``d``) and the generated audio in; whole known stems are exact
    copies, whole generated stems untouched.

    Args:
        generated, given: ``[B, S, n]``.
        known: bool ``[B, S, n]``.
    """
    out = generated.clone()
    if fade_samples > 0 and bool(known.any()) and not bool(known.all()):
        d = torch.from_numpy(_distance_to_known(known.cpu().numpy()))
        w = (1.0 - d / (fade_samples + 1)).clamp(min=0.0).to(generated.dtype)
        out = w * given + (1.0 - w) * generated
    return torch.where(known, given, out)


def stack_given(given: Mapping[str, Tensor | np.ndarray], stems: Sequence[str],
                generate: Sequence[str] | None = None) -> tuple[Tensor, Tensor]:
    """``{stem: [n] | [B, n]}`` -> (audio ``[B, S, n]``, known mask ``[B, S]``).

    Stems to generate default to every stem not given; a stem neither given nor generated is given **silence**.

    Raises:
        ValueError: unknown stem, a stem both given and generated, nothing to generate, unequal lengths.
    """
    unknown = sorted(set(given) - set(stems)) + sorted(set(generate or ()) - set(stems))
    if unknown:
        raise ValueError(f"unknown stem(s) {unknown}; stems are {list(stems)}")
    to_generate = [s for s in stems if s not in given] if generate is None else list(generate)
    both = sorted(set(to_generate) & set(given))
    if both:
        raise ValueError(f"stem(s) {both} are both given and to be generated")
    if not to_generate:
        raise ValueError("every stem is given: nothing to generate")
    arrays = {k: torch.as_tensor(np.asarray(v), dtype=torch.float32) for k, v in given.items()}
    arrays = {k: v[None] if v.ndim == 1 else v for k, v in arrays.items()}
    shapes = {tuple(v.shape) for v in arrays.values()}
    batch = max((v.shape[0] for v in arrays.values()), default=1)
    lengths = {v.shape[-1] for v in arrays.values()}
    if len(lengths) > 1 or any(v.ndim != 2 or v.shape[0] not in (1, batch) for v in arrays.values()):
        raise ValueError(f"given stems must be [n] or [B, n] with one length, got shapes {sorted(shapes)}")
    if not arrays:
        raise ValueError("no given stem: use generate() for total generation")
    n = lengths.pop()
    audio = torch.zeros(batch, len(stems), n)
    for k, v in arrays.items():
        audio[:, list(stems).index(k)] = v
    known = torch.tensor([s not in to_generate for s in stems]).expand(batch, -1).clone()
    return audio, known


def check_mask(mask: Tensor, batch: int, n_stems: int, n_frames: int) -> Tensor:
    """Known mask as bool ``[B, S]`` or ``[B, S, T']`` (``[S]`` / ``[1, ...]`` are broadcast).

    Raises:
        ValueError: a wrongly shaped mask, or an item with every stem known (nothing to generate).
    """
    mask = torch.as_tensor(mask, dtype=torch.bool).cpu()
    if mask.ndim == 1:
        mask = mask[None]
    if mask.ndim not in (2, 3) or mask.shape[1] != n_stems or (mask.ndim == 3 and mask.shape[2] != n_frames):
        raise ValueError(f"mask must be [S], [B, S] or [B, S, T'={n_frames}] with S={n_stems}, "
                         f"got {tuple(mask.shape)}")
    if mask.shape[0] not in (1, batch):
        raise ValueError(f"mask batch {mask.shape[0]} does not match the audio batch {batch}")
    mask = mask.expand(batch, *mask.shape[1:]).clone()
    if bool(mask.flatten(1).all(dim=1).any()):
        raise ValueError("every stem is known for some item: nothing to generate")
    return mask


def given_mixture(audio: Tensor, known: Tensor) -> Tensor:
    """Mixture of the known part of the given stems: ``sum_s audio * known`` ``[B, n]`` (CLAP conditioning)."""
    return (audio * known).sum(dim=1)
