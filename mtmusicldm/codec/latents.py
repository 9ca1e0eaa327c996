"""Stacked-stem latents: per-stem VAE encoding into `[B, S, C, T', F']` and back (spec §0, §3).

Each stem is its own 1-channel log-mel image. Stems are flattened stem-major, row = b*S + s, exactly as the
official `adapt_fbank_for_VAE_encoder` / `adapt_latent_for_LDM`, so a batch of B items with S stems is one VAE
batch of B*S images. The functions here work in VAE units; `LatentScale` (official `scale_factor` = 1 / std of the
unscaled latents) is the one place the scale is applied: `z_ldm = z_vae * scale` on the way in (training, encoding
given stems), `z_vae = z_ldm / scale` on the way out (decoding).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from einops import rearrange
from torch import Tensor

from mtmusicldm.codec.vae import decode, encode_moments, posterior_from_moments


@dataclass(frozen=True)
class LatentScale:
    """Multiplicative latent scale (official `scale_factor`, a checkpoint entry).

    Attributes:
        scale: factor applied as `z * scale` after encoding and `z / scale` before decoding.
    """

    scale: float = 1.0

    def __post_init__(self) -> None:
        if not (self.scale > 0 and torch.isfinite(torch.tensor(self.scale))):
            raise ValueError(f"LatentScale.scale must be finite and > 0, got {self.scale}")

    def encode(self, z: Tensor) -> Tensor:
        """VAE latents -> diffusion latents (`z * scale`)."""
        return z * self.scale

    def decode(self, z: Tensor) -> Tensor:
        """Diffusion latents -> VAE latents (`z / scale`)."""
        return z / self.scale

    @classmethod
    def from_latents(cls, z: Tensor) -> LatentScale:
        """Estimate the scale from unscaled latents (see `scale_factor_from_latents`)."""
        return cls(scale_factor_from_latents(z))


def scale_factor_from_latents(z: Tensor) -> float:
    """1 / std over all values of unscaled latents (torch unbiased std), as the official `scale_by_std`.

    Args:
        z: unscaled latents of any shape (official: posterior samples of the first batch).

    Returns:
        The scale factor.
    """
    if z.numel() < 2:
        raise ValueError(f"need at least 2 latent values to estimate a std, got shape {tuple(z.shape)}")
    std = z.detach().flatten().double().std().item()
    if not std > 0:
        raise ValueError(f"latent std is {std}; cannot derive a scale factor")
    return 1.0 / std


def _posterior_stems(vae: AutoencoderKL, mel: Tensor, chunk_size: int | None) -> DiagonalGaussianDistribution:
    if mel.ndim != 4:
        raise ValueError(f"mel must be [B, S, T, F], got shape {tuple(mel.shape)}")
    images = rearrange(mel, "b s t f -> (b s) 1 t f")  # row = b*S + s
    chunks = images.split(chunk_size) if chunk_size else (images,)
    return posterior_from_moments(torch.cat([encode_moments(vae, c) for c in chunks]))


def _unflatten(x: Tensor, batch: int) -> Tensor:
    return rearrange(x, "(b s) c t f -> b s c t f", b=batch)


def encode_stems(vae: AutoencoderKL, mel: Tensor, *, sample: bool, generator: torch.Generator | None = None,
                 chunk_size: int | None = None) -> Tensor:
    """Encode every stem independently and stack the latents.

    Args:
        vae: the diffusers VAE.
        mel: [B, S, T, F] stacked log-mels.
        sample: draw `mean + std * eps` (official training/eval) if True, else return the posterior mean.
        generator: RNG for eps; noise is drawn once for all B*S rows, in row order b*S + s.
        chunk_size: run the encoder on at most this many stem images at a time (memory); no effect on values.

    Returns:
        z: [B, S, C, T/4, F/4] unscaled latents.
    """
    posterior = _posterior_stems(vae, mel, chunk_size)
    z = posterior.sample(generator) if sample else posterior.mean
    return _unflatten(z, mel.shape[0])


def posterior_stems(vae: AutoencoderKL, mel: Tensor, *, chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Per-stem posterior parameters, for pre-encoding datasets and re-sampling later.

    Args:
        vae: the diffusers VAE.
        mel: [B, S, T, F] stacked log-mels.
        chunk_size: see `encode_stems`.

    Returns:
        (mean, std), each [B, S, C, T/4, F/4]; std = exp(0.5 * clamp(logvar, -30, 20)).
    """
    posterior = _posterior_stems(vae, mel, chunk_size)
    batch = mel.shape[0]
    return _unflatten(posterior.mean, batch), _unflatten(posterior.std, batch)


def decode_stems(vae: AutoencoderKL, z: Tensor, *, chunk_size: int | None = None) -> Tensor:
    """Decode stacked latents stem by stem.

    Args:
        vae: the diffusers VAE.
        z: [B, S, C, T', F'] unscaled latents.
        chunk_size: run the decoder on at most this many stem latents at a time.

    Returns:
        [B, S, 4T', 4F'] log-mels.
    """
    if z.ndim != 5:
        raise ValueError(f"z must be [B, S, C, T, F], got shape {tuple(z.shape)}")
    flat = rearrange(z, "b s c t f -> (b s) c t f")
    chunks = flat.split(chunk_size) if chunk_size else (flat,)
    mel = torch.cat([decode(vae, c) for c in chunks])  # [(B S), 1, T, F]
    return rearrange(mel, "(b s) 1 t f -> b s t f", b=z.shape[0])
