"""Explicit, batch-size-independent Gaussian noise.

Every random draw in the diffusion package goes through :func:`randn_like_per_sample`. A caller passes
either one ``torch.Generator`` (the whole batch is drawn from it in one call) or a sequence of ``B``
generators, one per batch item (EDM's ``StackedRandomGenerator`` idea). With per-sample generators,
sample ``k`` depends only on generator ``k``: results do not change with batch size or batch order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

Generators = torch.Generator | Sequence[torch.Generator]
"""One generator for the whole batch, or one generator per batch item."""

NoiseSampler = Callable[[Tensor, Tensor], Tensor]
"""``noise_sampler(sigma, sigma_next) -> eps`` with the shape of the current ``x`` (k-diffusion style)."""


def make_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One seeded ``torch.Generator`` per seed (per batch item).

    Args:
        seeds: one integer seed per batch item, e.g. derived from ``(global_seed, sample_id)``.
        device: device of the generators. CPU generators give device-independent noise.

    Returns:
        list of ``len(seeds)`` generators.
    """
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def _randn(shape: Sequence[int], generator: torch.Generator, like: Tensor) -> Tensor:
    # Draw on the generator's device (a CPU generator gives the same numbers for a CUDA x), then move.
    eps = torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=like.dtype)
    return eps.to(like.device)


def randn_like_per_sample(x: Tensor, generator: Generators) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn only from the given generator(s).

    Args:
        x: reference tensor ``[B, ...]`` (shape, dtype and device of the result).
        generator: a single generator (one draw of shape ``x.shape``) or ``B`` generators (item ``k`` is
            drawn from ``generator[k]`` with shape ``x.shape[1:]``).

    Returns:
        noise ``[B, ...]`` with the dtype and device of ``x``.

    Raises:
        ValueError: when ``generator`` is None or the number of generators differs from ``B``.
    """
    if generator is None:
        raise ValueError("randomness must be explicit: pass a torch.Generator or one generator per sample")
    if isinstance(generator, torch.Generator):
        return _randn(x.shape, generator, x)
    generators = list(generator)
    if len(generators) != x.shape[0]:
        raise ValueError(f"got {len(generators)} generators for a batch of {x.shape[0]}")
    return torch.stack([_randn(x.shape[1:], g, x) for g in generators])


def default_noise_sampler(x: Tensor, generator: Generators | None,
                          noise_sampler: NoiseSampler | None) -> NoiseSampler:
    """Resolve the ``noise_sampler`` / ``generator`` pair that stochastic samplers accept.

    Args:
        x: current sample ``[B, ...]`` (shape reference).
        generator: generator(s) for :func:`randn_like_per_sample`; used when ``noise_sampler`` is None.
        noise_sampler: explicit ``(sigma, sigma_next) -> eps``; takes precedence.

    Returns:
        a noise sampler. It raises a ``ValueError`` when called and neither source was given, so a
        deterministic run (eta = 0) never needs a generator.
    """
    if noise_sampler is not None:
        return noise_sampler

    def sample(sigma: Tensor, sigma_next: Tensor) -> Tensor:
        if generator is None:
            raise ValueError("this stochastic step needs noise: pass generator= or noise_sampler=")
        return randn_like_per_sample(x, generator)

    return sample
