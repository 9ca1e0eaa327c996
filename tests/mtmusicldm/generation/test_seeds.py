"""Per-item seeds and streams of generation."""
from __future__ import annotations

import pytest
import torch

from mtmusicldm.generation.seeds import NOISE, POSTERIOR, item_generators, item_seeds, posterior_generators
from mtmusicldm.utils.rng import sequence_seed


def test_item_seeds() -> None:
    assert item_seeds(3, 2) == [sequence_seed(3, 0), sequence_seed(3, 1)]
    assert item_seeds([5, 6], 2) == [5, 6]
    with pytest.raises(ValueError, match="2 item seeds for 3 items"):
        item_seeds([5, 6], 3)


def test_streams_depend_on_item_window_purpose_and_stem() -> None:
    def draw(gens: list[torch.Generator]) -> list[float]:
        return [float(torch.randn(1, generator=g)) for g in gens]

    noise = draw(item_generators([7, 8], NOISE))
    assert noise == draw(item_generators([7, 8], NOISE)) and noise[0] == draw(item_generators([7], NOISE))[0]
    assert noise != draw(item_generators([7, 8], NOISE, window=1)) != draw(item_generators([7, 8], POSTERIOR))
    stems = draw(posterior_generators([7, 8], [(0, 0), (0, 1), (1, 1)]))
    assert stems[1] == draw(posterior_generators([7], [(0, 1)]))[0] and len(set(stems)) == 3
