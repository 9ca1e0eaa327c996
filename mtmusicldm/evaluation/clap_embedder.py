"""CLAP-music FAD backbone: a thin wrapper around `mtmusicldm.conditioning.ClapConditioner`.

One 512-d L2-normalised embedding per file from a single 10 s CLAP clip (`crop="start"`, deterministic; shorter
files are repeat-padded by laion-clap). A Gaussian over 512 dims needs more than 512 files for a full-rank
covariance, so CLAP-FAD is only meaningful on large sets. Not the paper's metric: `comparable_to_paper = False`.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

from mtmusicldm.evaluation.base import config_digest, state_dict_digest

if TYPE_CHECKING:
    from mtmusicldm.conditioning import ClapConditioner

__all__ = ["ClapEmbedder"]


class ClapEmbedder:
    """`AudioEmbedder` over a frozen CLAP audio tower.

    Args:
        conditioner: a ready `ClapConditioner` (or any object with `embed_audio(wav [B, T], crop=...) -> [B, D]`
            and a `model` nn.Module); built lazily from `checkpoint` when None.
        checkpoint: MusicLDM `clap-ckpt.pt` or an MT-MusicLDM checkpoint (local path), used when `conditioner` is
            None.
        amodel: laion-clap audio model name for `checkpoint`.
        device: torch device for a conditioner built here.
        crop: which 10 s of a longer file is embedded ("start" or "center"; deterministic).

    Raises:
        ValueError: neither `conditioner` nor `checkpoint`.
    """

    name = "clap"
    sample_rate = 16000
    dim = 512
    comparable_to_paper = False

    def __init__(
        self,
        conditioner: ClapConditioner | Any | None = None,
        *,
        checkpoint: str | Path | None = None,
        amodel: str = "HTSAT-base",
        device: str | torch.device = "cpu",
        crop: Literal["start", "center"] = "start",
    ) -> None:
        if conditioner is None and checkpoint is None:
            raise ValueError("ClapEmbedder: give a ClapConditioner or the local path of a CLAP checkpoint")
        if crop not in ("start", "center"):
            raise ValueError(f"ClapEmbedder: crop must be 'start' or 'center' (deterministic), got {crop!r}")
        self._conditioner = conditioner
        self._checkpoint = None if checkpoint is None else Path(checkpoint)
        self._amodel = amodel
        self._device = device
        self.crop = crop
        self._fingerprint: str | None = None

    @property
    def conditioner(self) -> Any:
        """The wrapped conditioner, loaded from `checkpoint` on first use."""
        if self._conditioner is None:
            from mtmusicldm.conditioning import ClapConditioner  # heavy (laion-clap): only when needed

            self._conditioner = ClapConditioner.from_checkpoint(
                self._checkpoint, amodel=self._amodel, device=self._device  # type: ignore[arg-type]
            )
        return self._conditioner

    def fingerprint(self) -> str:
        """Digest of the CLAP weights, the clip placement and the sample rate (computed once)."""
        if self._fingerprint is None:
            model = self.conditioner.model
            self._fingerprint = config_digest({
                "backbone": "clap/embed_audio", "crop": self.crop, "sample_rate": self.sample_rate,
                "weights": state_dict_digest(model.state_dict()),
            })  # fmt: skip
        return self._fingerprint

    def embed(self, wav: np.ndarray) -> np.ndarray:
        """Embed one file.

        Args:
            wav: [T] float32 mono waveform at 16 kHz.

        Returns:
            [1, 512] float32 unit-norm embedding.
        """
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1 or wav.shape[0] == 0:
            raise ValueError(f"ClapEmbedder.embed: expected a non-empty [T] waveform, got shape {wav.shape}")
        out = self.conditioner.embed_audio(torch.from_numpy(wav)[None], crop=self.crop)
        emb = out.detach().to("cpu", torch.float32).numpy()
        if emb.shape != (1, self.dim):
            raise ValueError(f"ClapEmbedder.embed: conditioner returned shape {emb.shape}, expected (1, {self.dim})")
        return emb

    def __repr__(self) -> str:
        src = self._checkpoint if self._checkpoint is not None else type(self._conditioner).__name__
        return f"ClapEmbedder({src}, crop={self.crop!r})"
