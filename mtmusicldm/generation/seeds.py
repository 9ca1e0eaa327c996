"""Random streams of generation: every item's streams follow from its item seed alone.

Item ``k`` of a call with base seed ``s`` has the item seed ``sequence_seed(s, k)`` (or the caller's own item
seed). Within window ``w`` (0 for one segment) the item draws its initial and sampler noise from
``sequence_seed(item, w, NOISE)``, the CLAP crop of its conditioning mixture from ``sequence_seed(item, w,
CLAP_CROP)`` and the posterior noise of stem ``j`` from ``sequence_seed(item, w, POSTERIOR, j)``, so sample ``k``
does not depend on the batch it is in, nor on which other stems are encoded (up to float rounding of batched
kernels). The rule itself lives in :mod:`mtmusicldm.utils.rng`.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

from mtmusicldm.diffusion.noise import make_generators
from mtmusicldm.utils.rng import sequence_seed

NOISE, POSTERIOR, CLAP_CROP = 0, 1, 2
"""Purposes of the per-item random streams."""


def item_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    """Per-item seeds: ``sequence_seed(seed, k)`` for ``k < n``, or the ``n`` given seeds as they are."""
    if isinstance(seed, int):
        return [sequence_seed(seed, k) for k in range(n)]
    seeds = [int(x) for x in seed]
    if len(seeds) != n:
        raise ValueError(f"got {len(seeds)} item seeds for {n} items")
    return seeds


def item_generators(seeds: Sequence[int], purpose: int, window: int = 0) -> list[torch.Generator]:
    """CPU generators for one random stream (``purpose``) of each item of a batch, in ``window``."""
    return make_generators([sequence_seed(s, window, purpose) for s in seeds])


def posterior_generators(seeds: Sequence[int], pairs: Sequence[tuple[int, int]],
                         window: int = 0) -> list[torch.Generator]:
    """CPU generators of the VAE posterior noise of (item row, stem) ``pairs``."""
    return make_generators([sequence_seed(seeds[i], window, POSTERIOR, j) for i, j in pairs])
