"""Conditioning of a sampling call: the CFG token, FiLM checks, and the CLAP embedding of given mixtures."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from mtmusicldm.generation.model import GenerationModel, model_device
from mtmusicldm.generation.seeds import CLAP_CROP, item_generators

CONDITIONED_GUIDANCE = 2.0
"""Classifier-free guidance scale used by default with a prompt or reference (the paper's total generation)."""


def uncond_embedding(model: GenerationModel) -> Tensor:
    """The classifier-free-guidance token (CLAP text embedding of ""), ``[D]``."""
    if model.film_dim is None:
        raise ValueError("the model is unconditional: it has no conditioning embedding")
    u = model.uncond_clap
    if u is None:
        u = model.clap.uncond_embedding(1)[0]
    return u.to(model_device(model), torch.float32)


def resolve_conditioning(model: GenerationModel, film: Tensor | None, batch: int,
                         guidance_scale: float) -> tuple[Tensor | None, Tensor | None]:
    """``(film [B, D], uncond_film [B, D] | None)`` for ``sample_latents``.

    A conditional model without ``film`` samples unconditionally (film = the "" token); ``uncond_film`` is only
    returned when ``guidance_scale != 1``.

    Raises:
        ValueError: conditioning or guidance on an unconditional model, or a wrongly shaped ``film``.
    """
    if model.film_dim is None:
        if film is not None:
            raise ValueError("the model is unconditional: it takes no prompt, reference or film embedding")
        if guidance_scale != 1.0:
            raise ValueError(f"guidance_scale={guidance_scale}: classifier-free guidance needs a conditional model")
        return None, None
    uncond = uncond_embedding(model).expand(batch, -1)
    if film is None:
        film = uncond
    film = film.to(uncond)
    if film.ndim == 1:
        film = film.expand(batch, -1)
    if film.shape != uncond.shape:
        raise ValueError(f"film must be [{batch}, {model.film_dim}] or [{model.film_dim}], got {tuple(film.shape)}")
    return film, (uncond if guidance_scale != 1.0 else None)


def embed_mixture(model: GenerationModel, mix: Tensor, seeds: Sequence[int], window: int = 0) -> Tensor:
    """CLAP audio embedding of mixtures ``[B, n]`` (16 kHz), official random 10 s crop seeded per item -> ``[B, D]``."""
    if model.clap is None:
        raise ValueError("the model is unconditional: it has no CLAP conditioner")
    gens = item_generators(seeds, CLAP_CROP, window)
    return model.clap.embed_audio(mix.float(), generator=gens, crop="random").to(model_device(model))


def rows_of(film: Tensor | None, rows: range) -> Tensor | None:
    """The batch rows ``rows`` of a per-item ``film [B, D]`` (a shared ``[D]`` or None as it is)."""
    return film[rows.start:rows.stop] if film is not None and film.ndim == 2 else film
