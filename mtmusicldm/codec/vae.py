"""Mel-domain VAE: diffusers `AutoencoderKL` and its `DiagonalGaussianDistribution` (the official posterior).

The network is the real diffusers module; this file only configures it for MusicLDM (1-channel log-mel images,
8 latent channels, 4x down-sampling on both axes) and exposes small functional helpers:

* `vae_config(...)` -> diffusers kwargs equal to the official `ddconfig` (spec §3),
* `encode_moments` / `posterior_from_moments` / `encode_posterior` -> the posterior `N(mean, exp(logvar))` with the
  official logvar clamp,
* `decode` -> `decoder(post_quant_conv(z))`.

Architecture notes (checked against the official `diffusionmodules/model.py` and the golden `vae.pt`):

* diffusers `Downsample2D(padding=0)` pads right/bottom by one zero then runs a 3x3 stride-2 conv, exactly as the
  official `Downsample`.
* GroupNorm(32, eps=1e-6) everywhere; the decoder has `layers_per_block + 1` resnets per level, as the official
  `num_res_blocks + 1`.
* The mid-block attention is single-head with scale `C^-0.5` in both codes; the official 1x1 convs become
  `Linear` layers (weights `[C, C, 1, 1]` -> `[C, C]`, see `mtmusicldm.official.vae`).
* diffusers' `scaling_factor` is *not* used: latent scaling lives in `mtmusicldm.codec.latents.LatentScale`.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, TypeVar

import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from torch import Tensor

LOGVAR_MIN: float = -30.0
"""Lower clamp of the posterior log-variance (official and diffusers `DiagonalGaussianDistribution`)."""
LOGVAR_MAX: float = 20.0
"""Upper clamp of the posterior log-variance."""

MUSICLDM_HUB_ID: str = "ucsd-reach/musicldm"
"""Hugging Face repository holding the MusicLDM VAE (`vae/`) and HiFi-GAN (`vocoder/`) in diffusers format."""
WEIGHTS_HINT = (
    "Get MusicLDM's weights from Zenodo record 10643148 (https://zenodo.org/records/10643148: vae-ckpt.ckpt, "
    f"hifigan-ckpt.ckpt, clap-ckpt.pt) or the diffusers repository `{MUSICLDM_HUB_ID}` "
    f"(`huggingface-cli download {MUSICLDM_HUB_ID}`), and point codec.path / codec.vocoder_path at them."
)
"""Where MusicLDM's component weights come from (in codec and CLAP errors)."""

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

M = TypeVar("M")


# ---------------------------------------------------------------------------------------------------------------
# Configuration and construction


def vae_config(
    ch: int = 128,
    ch_mult: tuple[int, ...] = (1, 2, 4),
    num_res_blocks: int = 2,
    z_channels: int = 8,
    in_channels: int = 1,
    out_channels: int = 1,
    norm_num_groups: int = 32,
    sample_size: int = 256,
) -> dict[str, Any]:
    """diffusers `AutoencoderKL` kwargs for an official-style mel VAE (defaults: MusicLDM, 55.4 M params).

    Args:
        ch: base channel count (official `ddconfig.ch`).
        ch_mult: channel multiplier per resolution level; `len(ch_mult) - 1` down-samplings by 2.
        num_res_blocks: resnets per encoder level (the decoder has one more, in both codes).
        z_channels: latent channels C (official `z_channels` == `embed_dim`).
        in_channels: input image channels (1: one log-mel stem).
        out_channels: output image channels (official `out_ch`).
        norm_num_groups: GroupNorm groups (official `Normalize` uses 32).
        sample_size: diffusers' tiling threshold only (official `resolution`); tiling stays off.

    Returns:
        kwargs for `AutoencoderKL(**kwargs)`.
    """
    levels = len(ch_mult)
    return {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "down_block_types": ["DownEncoderBlock2D"] * levels,
        "up_block_types": ["UpDecoderBlock2D"] * levels,
        "block_out_channels": [ch * m for m in ch_mult],
        "layers_per_block": num_res_blocks,
        "act_fn": "silu",
        "latent_channels": z_channels,
        "norm_num_groups": norm_num_groups,
        "sample_size": sample_size,
        # Unused by this project (see LatentScale); 1.0 so that nobody applies a wrong factor by accident.
        "scaling_factor": 1.0,
        "force_upcast": True,
        "use_quant_conv": True,
        "use_post_quant_conv": True,
        "mid_block_add_attention": True,
    }


def build_vae(**cfg: Any) -> AutoencoderKL:
    """Build a randomly initialised `AutoencoderKL` from `vae_config(**cfg)`, in eval mode.

    Args:
        **cfg: keyword arguments of `vae_config` (e.g. `ch=32` for a tiny test model).

    Returns:
        The diffusers model. Build it under `with torch.device("meta"):` for a weight-free skeleton.
    """
    return AutoencoderKL(**vae_config(**cfg)).eval()


def from_pretrained_checked(cls: type[M], path_or_hub_id: str, subfolder: str | None, what: str) -> M:
    """`cls.from_pretrained` with a clear FileNotFoundError when the weights cannot be found.

    A string naming an existing directory is loaded locally. A string shaped like a hub id (`owner/name`) is
    passed to the hub client (which honours `HF_HUB_OFFLINE`). Anything else is a missing local path.

    Args:
        cls: a diffusers `ModelMixin` or transformers `PreTrainedModel` class.
        path_or_hub_id: local directory or Hugging Face repository id.
        subfolder: folder inside it (`"vae"`, `"vocoder"`), or None.
        what: human-readable name for error messages.

    Returns:
        The loaded model (eval mode).

    Raises:
        FileNotFoundError: nothing loadable at that location (message says where to get the weights).
    """
    hint = (
        f"Get the {what} weights with `huggingface-cli download {MUSICLDM_HUB_ID}` (subfolder {subfolder!r}) "
        f"and pass the local directory, or convert the official checkpoint with `mtmusicldm.official`."
    )
    local = Path(path_or_hub_id).expanduser()
    if not local.exists() and not _HUB_ID.match(path_or_hub_id):
        raise FileNotFoundError(f"{what}: local path {str(local)!r} does not exist. {hint}")
    kwargs: dict[str, Any] = {} if subfolder is None else {"subfolder": subfolder}
    source = str(local) if local.exists() else path_or_hub_id
    try:
        model = cls.from_pretrained(source, **kwargs)  # type: ignore[attr-defined]
    except (OSError, ValueError) as err:  # EnvironmentError / HFValidationError / missing config
        raise FileNotFoundError(
            f"{what}: could not load from {source!r} (subfolder {subfolder!r}): {err}. {hint}"
        ) from err
    return model.eval()


def load_vae_pretrained(path_or_hub_id: str, subfolder: str | None = "vae") -> AutoencoderKL:
    """Load a diffusers-format VAE, e.g. `load_vae_pretrained("ucsd-reach/musicldm")` or a local directory.

    Args:
        path_or_hub_id: local directory (as written by `save_pretrained`) or hub id.
        subfolder: folder holding `config.json` + weights; None for the directory itself.

    Returns:
        The frozen-ready `AutoencoderKL` in eval mode (tiling/slicing off, so outputs equal the plain forward).

    Raises:
        FileNotFoundError: the weights are not there (the message says where to get them).
    """
    vae = from_pretrained_checked(AutoencoderKL, path_or_hub_id, subfolder, "VAE")
    vae.disable_tiling()
    vae.disable_slicing()
    return vae


# ---------------------------------------------------------------------------------------------------------------
# Posterior


def posterior_from_moments(moments: Tensor) -> DiagonalGaussianDistribution:
    """The official diagonal-Gaussian posterior of the moments: diffusers' `DiagonalGaussianDistribution`.

    It splits the channels into mean | logvar and clamps logvar to [LOGVAR_MIN, LOGVAR_MAX] (official), draws
    `mean + std * eps` with `sample(generator)` (eps on a CPU generator is drawn on the CPU, then moved) and gives
    the KL to N(0, 1) with `kl()`. diffusers does not check the channel count; this does.

    Args:
        moments: [N, 2C, T', F'] output of `quant_conv(encoder(x))`.

    Returns:
        The posterior; `.mean`, `.logvar` (clamped), `.std`, `.var` are [N, C, T', F'].
    """
    if moments.shape[1] % 2:
        raise ValueError(f"moments need an even channel count (mean | logvar), got shape {tuple(moments.shape)}")
    return DiagonalGaussianDistribution(moments)


# ---------------------------------------------------------------------------------------------------------------
# Encode / decode


def encode_moments(vae: AutoencoderKL, mel: Tensor) -> Tensor:
    """Posterior moments `quant_conv(encoder(mel))` (no tiling, no slicing).

    Args:
        vae: the diffusers VAE.
        mel: [N, 1, T, F] log-mel images (T, F divisible by 2**(levels-1)).

    Returns:
        [N, 2C, T/4, F/4] moments (for the 3-level MusicLDM VAE).
    """
    _check_image(mel, vae.config.in_channels, "mel")
    moments = vae.encoder(mel)
    if vae.quant_conv is not None:
        moments = vae.quant_conv(moments)
    return moments


def encode_posterior(vae: AutoencoderKL, mel: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior mean and clamped log-variance of `mel`.

    Args:
        vae: the diffusers VAE.
        mel: [N, 1, T, F] log-mel images.

    Returns:
        (mean, logvar), each [N, C, T/4, F/4]; logvar clamped to [-30, 20].
    """
    posterior = posterior_from_moments(encode_moments(vae, mel))
    return posterior.mean, posterior.logvar


def decode(vae: AutoencoderKL, z: Tensor) -> Tensor:
    """Decode latents: `decoder(post_quant_conv(z))` (official `AutoencoderKL.decode`).

    Args:
        vae: the diffusers VAE.
        z: [N, C, T', F'] unscaled latents.

    Returns:
        [N, 1, 4T', 4F'] log-mel images.
    """
    _check_image(z, vae.config.latent_channels, "z")
    (mel,) = vae.decode(z, return_dict=False)
    return mel


def _check_image(x: Tensor, channels: int, name: str) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise ValueError(f"{name} must be [N, {channels}, H, W], got shape {tuple(x.shape)}")
