"""Generation and arrangement within one model segment (paper Tables 1-3, official spec 7/8).

* :func:`generate_segment`: per-item noise -> ``sample_latents`` -> decode -> audio, cropped to ``n`` samples.
* :func:`arrange_segment`: the given stems are encoded (posterior **sample**, seeded per item), sampled with
  ``known = z * scale_factor`` and a known mask, every non-given stem is decoded, and in the waveform domain the
  given samples are **replaced** by the given audio, bit-identically. A conditional model is conditioned on the
  CLAP embedding of the mixture of the given stems (an explicit ``film`` from a reference or a prompt overrides
  it); the official evaluation instead conditions on the full ground-truth mixture (passed as ``film``, see
  ``pipeline/sample.py``).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtmusicldm.diffusion.inpainting import NoiseMode, expand_mask
from mtmusicldm.diffusion.noise import randn_like_per_sample
from mtmusicldm.diffusion.sampling import sample_latents
from mtmusicldm.generation.codec_io import decode_audio, encode_audio
from mtmusicldm.generation.conditioning import embed_mixture, resolve_conditioning, rows_of, uncond_embedding
from mtmusicldm.generation.masks import given_mixture, known_samples, replace_given
from mtmusicldm.generation.model import GenerationModel, model_device, segment_samples
from mtmusicldm.generation.seeds import NOISE, item_generators


def batches(n: int, batch_size: int) -> list[range]:
    """Consecutive index ranges of at most ``batch_size`` covering ``range(n)``."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return [range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


def sample_segment_latents(model: GenerationModel, seeds: Sequence[int], *, window: int = 0,
                           film: Tensor | None = None, guidance_scale: float = 1.0, known: Tensor | None = None,
                           mask: Tensor | None = None, sampler: str = "ddim", steps: int = 200,
                           eta: float | None = None, noise_mode: NoiseMode = "fresh",
                           final_sigma_zero: bool | None = None, progress: bool = False) -> Tensor:
    """Scaled latents ``[B, S, C, T', F']`` of one segment per item (``B = len(seeds)``).

    Item ``k``'s initial noise and all later sampler / inpainting noise come from its ``NOISE`` stream in
    ``window``. ``known`` (scaled latents) and ``mask`` (True = known, ``[B, S]``, ``[B, S, T']`` or full)
    select arrangement; the result equals ``known`` on the known entries.
    """
    b = len(seeds)
    device = model_device(model)
    film, uncond = resolve_conditioning(model, film, b, guidance_scale)
    gens = item_generators(seeds, NOISE, window)
    noise = randn_like_per_sample(torch.empty(b, *model.latent_shape, device=device), gens)
    if mask is not None and not bool(expand_mask(mask, noise).any()):
        known, mask = None, None  # nothing known: plain generation
    return sample_latents(model.eps_model, noise, sampler=sampler, steps=steps, eta=eta, film=film, uncond_film=uncond,
                          guidance_scale=guidance_scale, known=known, stem_mask=mask, noise_mode=noise_mode,
                          replace_known_at_end=True, final_sigma_zero=final_sigma_zero, generator=gens,
                          schedule=model.schedule, progress=progress)


def generate_segment(model: GenerationModel, seeds: Sequence[int], n_samples: int, *, film: Tensor | None,
                     batch_size: int, **knobs: object) -> Tensor:
    """Total generation of one segment per item, cropped to ``n_samples <= segment``: ``[B, S, n_samples]``.

    Args:
        seeds: item seeds (:func:`~mtmusicldm.generation.seeds.item_seeds`).
        film: conditioning ``[B, D]`` / ``[D]`` or None.
        knobs: ``guidance_scale``, ``sampler``, ``steps``, ``eta``, ``noise_mode``, ``progress`` of
            :func:`sample_segment_latents`.
    """
    seg, out = segment_samples(model), []
    with torch.inference_mode():
        for rows in batches(len(seeds), batch_size):
            z = sample_segment_latents(model, seeds[rows.start:rows.stop], film=rows_of(film, rows), **knobs)
            out.append(decode_audio(model, z, seg)[..., :n_samples])
    return torch.cat(out)


def arrange_segment(model: GenerationModel, audio: Tensor, mask: Tensor, seeds: Sequence[int], *,
                    film: Tensor | None, condition_on_given: bool, batch_size: int, fade_samples: int,
                    **knobs: object) -> Tensor:
    """Arrangement of inputs no longer than a segment.

    Args:
        audio: ``[B, S, n]`` given stems, ``n <= segment``.
        mask: checked known mask ``[B, S]`` or ``[B, S, T']`` (:func:`~mtmusicldm.generation.masks.check_mask`).
        film: conditioning ``[B, D]`` / ``[D]``; None and ``condition_on_given``: a conditional model is
            conditioned on the CLAP embedding of the given mixture.
        fade_samples: cross-fade at time-mask boundaries.
        knobs: as :func:`generate_segment`.

    Returns:
        ``[B, S, n]`` CPU float32: given samples bit-identical to the input, generated ones clipped to [-1, 1].
    """
    seg, (b, s, n) = segment_samples(model), audio.shape
    padded = torch.nn.functional.pad(audio, (0, seg - n))
    known = known_samples(mask, s, seg)
    out = []
    with torch.inference_mode():
        for rows in batches(b, batch_size):
            item_seeds = seeds[rows.start:rows.stop]
            m, wav, kn = mask[rows.start:rows.stop], padded[rows.start:rows.stop], known[rows.start:rows.stop]
            has_known = m.flatten(2).any(dim=2) if m.ndim == 3 else m
            z_known = encode_audio(model, wav, item_seeds, rows=has_known)
            f = rows_of(film, rows)
            if f is None and condition_on_given and model.film_dim is not None:
                f = embed_mixture(model, given_mixture(wav, kn), item_seeds)
                f[~kn.flatten(1).any(dim=1)] = uncond_embedding(model)  # nothing given: unconditional
            z = sample_segment_latents(model, item_seeds, film=f, known=z_known, mask=m, **knobs)
            generated = decode_audio(model, z, seg, rows=~kn.all(dim=2))
            out.append(replace_given(generated, wav, kn, fade_samples)[..., :n])
    return torch.cat(out)
