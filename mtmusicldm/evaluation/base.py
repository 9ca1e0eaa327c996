"""The embedder protocol shared by every FAD backbone, and fingerprint helpers."""
from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

__all__ = ["AudioEmbedder", "EmbedderName", "config_digest", "state_dict_digest"]

EmbedderName = Literal["vggish", "clap", "offline", "crepe"]
"""Keys of `EMBEDDERS` (the values a params file may name)."""


@runtime_checkable
class AudioEmbedder(Protocol):
    """A frozen audio embedding backbone for Fréchet distances.

    Attributes:
        name: registry key (a key of `EMBEDDERS`).
        sample_rate: rate (Hz) the waveforms passed to `embed` must have.
        dim: embedding size D.
        comparable_to_paper: True only when the numbers it yields are on the paper's scale (VGGish with the
            released torchvggish weights and the audioldm_eval protocol).
    """

    name: str
    sample_rate: int
    dim: int
    comparable_to_paper: bool

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """Embed one file.

        Args:
            wav: [T] float32 mono waveform at `sample_rate`.

        Returns:
            [frames, dim] float32 embeddings (frames >= 1), pooled with other files' frames by the caller.
        """
        ...

    def fingerprint(self) -> str:
        """Hex digest identifying the weights and the preprocessing; changes whenever either changes."""
        ...


def config_digest(config: Mapping[str, Any]) -> str:
    """sha256 of a JSON-serialisable config (sorted keys), hex."""
    return hashlib.sha256(json.dumps(dict(config), sort_keys=True, default=str).encode()).hexdigest()


def state_dict_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and bytes of every tensor of a state dict (sorted by name), hex."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy())  # buffer protocol: no copy
    return h.hexdigest()
