"""What generation needs from a model (`GenerationModel`) and the facts derived from it."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import torch

from mtmusicldm.diffusion.schedules import DiffusionSchedule
from mtmusicldm.geometry import FRAME_SAMPLES


class GenerationModel(Protocol):
    """What generation needs from a model (`mtmusicldm.ldm.MTMusicLDM` satisfies it).

    ``eps_model(x [B, S, C, T', F'], t [B], film [B, D] | None) -> eps`` is what the samplers run (the UNet, or
    its eps view when it predicts v); ``unet`` is the network itself; ``config`` holds ``segment_samples`` and
    ``sample_rate``; ``latent_shape`` is ``[S, C, T', F']``; ``codec`` is a
    :class:`~mtmusicldm.codec.codec_dir.Codec`; ``clap`` is a conditioner (``embed_audio``, ``embed_text``,
    ``uncond_embedding``) or None.
    """

    unet: Any
    config: Mapping[str, Any]

    @property
    def eps_model(self) -> Any: ...
    @property
    def scale_factor(self) -> float: ...
    @property
    def stems(self) -> tuple[str, ...]: ...
    @property
    def schedule(self) -> DiffusionSchedule: ...
    @property
    def latent_shape(self) -> tuple[int, int, int, int]: ...
    @property
    def film_dim(self) -> int | None: ...
    @property
    def uncond_clap(self) -> torch.Tensor | None: ...
    @property
    def codec(self) -> Any: ...
    @property
    def clap(self) -> Any: ...


def segment_samples(model: GenerationModel) -> int:
    """Audio samples of one model segment (``T' * 640``).

    Raises:
        ValueError: ``config["segment_samples"]`` disagrees with the latent shape.
    """
    n = int(model.config["segment_samples"])
    if n != model.latent_shape[2] * FRAME_SAMPLES:
        raise ValueError(f"segment_samples={n} does not match latent_shape {model.latent_shape} "
                         f"({model.latent_shape[2]} frames x {FRAME_SAMPLES} samples)")
    return n


def model_device(model: GenerationModel) -> torch.device:
    """Device of the UNet."""
    return next(model.unet.parameters()).device
