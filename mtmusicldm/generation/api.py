"""The entry points: `generate` and `arrange` of any length (longer than a segment: the long-form path)."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from mtmusicldm.diffusion.inpainting import NoiseMode
from mtmusicldm.generation.longform import arrange_long, generate_long
from mtmusicldm.generation.masks import DEFAULT_FADE_SAMPLES, check_mask, stack_given
from mtmusicldm.generation.model import GenerationModel, segment_samples
from mtmusicldm.generation.seeds import item_seeds
from mtmusicldm.generation.segment import arrange_segment, generate_segment


def generate(model: GenerationModel, n: int, *, seed: int | Sequence[int], seconds: float | None = None,
             sampler: str = "ddim", steps: int = 200, eta: float | None = None, guidance_scale: float = 1.0,
             film: Tensor | None = None, batch_size: int = 4, noise_mode: NoiseMode = "fresh",
             overlap: float = 0.5, progress: bool = False) -> Tensor:
    """Total generation of ``n`` items (all stems).

    Args:
        seed: item ``k`` uses ``sequence_seed(seed, k)`` (or ``seed[k]`` for a sequence of item seeds).
        seconds: output length (None: one segment). Shorter: one segment cropped; longer: windowed latent
            continuation (:func:`~mtmusicldm.generation.longform.generate_long`, ``overlap`` = fraction of a window).
        film: conditioning ``[n, D]`` or ``[D]`` (CLAP audio/text embedding), None = unconditional.
        guidance_scale: CFG scale (official generation: 2.0 with conditioning).

    Returns:
        ``[n, S, samples]`` float32 CPU audio, each stem ``nan_to_num``-ed and clipped to [-1, 1].
    """
    seg = segment_samples(model)
    total = seg if seconds is None else int(round(seconds * int(model.config["sample_rate"])))
    if total < 1:
        raise ValueError(f"seconds={seconds} gives no samples")
    knobs = dict(sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance_scale, noise_mode=noise_mode,
                 progress=progress)
    if total > seg:
        return generate_long(model, n, total, seed=seed, film=film, batch_size=batch_size, overlap=overlap, **knobs)
    return generate_segment(model, item_seeds(seed, n), total, film=film, batch_size=batch_size, **knobs)


def arrange(model: GenerationModel, given: Mapping[str, Tensor | np.ndarray] | Tensor, *, seed: int | Sequence[int],
            mask: Tensor | None = None, generate: Sequence[str] | None = None, sampler: str = "ddim",
            steps: int = 200, eta: float | None = None, guidance_scale: float = 1.0, film: Tensor | None = None,
            condition_on_given: bool = True, batch_size: int = 4, noise_mode: NoiseMode = "fresh",
            fade_samples: int = DEFAULT_FADE_SAMPLES, overlap: float = 0.5, progress: bool = False) -> Tensor:
    """Arrangement: generate the missing stems (or time spans) given the others; official spec 8.

    Args:
        given: ``{stem: [n] | [B, n]}`` (known mask from the keys and ``generate``; see
            :func:`~mtmusicldm.generation.masks.stack_given`) or audio ``[B, S, n]`` with ``mask``.
        seed: item ``k`` uses ``sequence_seed(seed, k)`` (or ``seed[k]`` for a sequence of item seeds).
        mask: known mask (True = given) ``[S]``, ``[B, S]`` or ``[B, S, T']``
            (:func:`~mtmusicldm.generation.masks.time_mask`), only with a tensor ``given``.
        guidance_scale: CFG scale (official arrangement: 1.0).
        film: conditioning ``[B, D]`` / ``[D]`` (reference or prompt); None and ``condition_on_given``: a
            conditional model is conditioned on the CLAP embedding of the given mixture.
        fade_samples: cross-fade at time-mask boundaries (whole stems are exact copies regardless).
        overlap: window overlap (fraction) when ``n`` exceeds a segment
            (:func:`~mtmusicldm.generation.longform.arrange_long`).

    Returns:
        ``[B, S, n]`` CPU float32: given samples bit-identical to the input, generated ones clipped to [-1, 1].
    """
    if isinstance(given, Mapping):
        if mask is not None:
            raise ValueError("pass mask= only with a [B, S, n] tensor of given audio")
        audio, mask = stack_given(given, model.stems, generate)
    else:
        if mask is None or generate is not None:
            raise ValueError("a [B, S, n] audio tensor needs mask= (True = given) and no generate=")
        audio = torch.as_tensor(given, dtype=torch.float32).cpu()
    if audio.ndim != 3 or audio.shape[1] != len(model.stems):
        raise ValueError(f"given audio must be [B, S={len(model.stems)}, n], got {tuple(audio.shape)}")
    b, s, n = audio.shape
    mask = check_mask(mask, b, s, model.latent_shape[2])
    knobs = dict(sampler=sampler, steps=steps, eta=eta, guidance_scale=guidance_scale, noise_mode=noise_mode,
                 progress=progress)
    if n > segment_samples(model):
        if mask.ndim == 3:
            raise ValueError("time masks are only supported within one segment; long inputs take whole stems")
        return arrange_long(model, audio, mask, seed=seed, film=film, condition_on_given=condition_on_given,
                            batch_size=batch_size, overlap=overlap, **knobs)
    return arrange_segment(model, audio, mask, item_seeds(seed, b), film=film, condition_on_given=condition_on_given,
                           batch_size=batch_size, fade_samples=fade_samples, **knobs)
