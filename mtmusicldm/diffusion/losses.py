"""Training objective: the official eps-prediction MSE with uniform timesteps (spec 6), plus v-prediction and
min-SNR weighting as options (embedded profile)."""

from __future__ import annotations

import torch
from torch import Tensor

from mtmusicldm.diffusion.denoiser import PREDICTIONS, EpsModel, append_dims
from mtmusicldm.diffusion.schedules import DiffusionSchedule


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, schedule: DiffusionSchedule) -> Tensor:
    """Forward process ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps`` with the official float32 buffers.

    Args:
        x0: clean latents ``[B, S, C, T, F]``.
        t: int64 timesteps ``[B]`` in ``[0, T)``.
        noise: standard normal ``[B, S, C, T, F]``.
        schedule: the training schedule.

    Returns:
        VP noisy latents ``[B, S, C, T, F]``.
    """
    buffers = schedule.official_buffers()
    idx = t.detach().long().cpu()
    if idx.min() < 0 or idx.max() >= schedule.num_timesteps:
        raise ValueError(f"timesteps must lie in [0, {schedule.num_timesteps})")
    sqrt_ab = buffers["sqrt_alphas_cumprod"][idx].to(device=x0.device, dtype=x0.dtype)
    sqrt_1m_ab = buffers["sqrt_one_minus_alphas_cumprod"][idx].to(device=x0.device, dtype=x0.dtype)
    return append_dims(sqrt_ab, x0.ndim) * x0 + append_dims(sqrt_1m_ab, x0.ndim) * noise


def diffusion_loss(unet: EpsModel, x0: Tensor, t: Tensor, noise: Tensor, film: Tensor | None = None,
                   schedule: DiffusionSchedule | None = None, *, prediction: str = "eps",
                   snr_gamma: float | None = None) -> Tensor:
    """Per-sample MSE of the UNet's prediction, optionally min-SNR weighted.

    The official objective is ``prediction="eps"``, ``snr_gamma=None``: ``mean_{S,C,T,F} (unet(x_t, t, film) -
    eps)^2`` (official ``l2`` / ``loss_simple``; the total loss is the batch mean, logvar = 0, no VLB term).
    ``prediction="v"`` regresses ``v = sqrt(abar) eps - sqrt(1 - abar) x0`` instead (Salimans & Ho 2022).
    ``snr_gamma`` applies min-SNR-gamma weighting (Hang et al. 2023): ``min(SNR, gamma) / SNR`` for eps,
    ``min(SNR, gamma) / (SNR + 1)`` for v, with ``SNR = abar / (1 - abar)``: each timestep weighs as an x0-loss
    clipped at gamma, which stops the easy low-noise steps from dominating training.

    Args:
        unet: the model ``unet(x_t, t, film)``.
        x0: clean (scaled) latents ``[B, S, C, T, F]``.
        t: int64 timesteps ``[B]``.
        noise: standard normal ``[B, S, C, T, F]``.
        film: conditioning ``[B, D]`` (after CFG dropout) or None.
        schedule: training schedule (default: the official one).
        prediction: "eps" (official) or "v".
        snr_gamma: min-SNR gamma (> 0), or None for uniform weights (official).

    Returns:
        loss ``[B]``.
    """
    schedule = DiffusionSchedule() if schedule is None else schedule
    if noise.shape != x0.shape or t.shape != (x0.shape[0],):
        raise ValueError(f"shapes x0 {tuple(x0.shape)}, noise {tuple(noise.shape)}, t {tuple(t.shape)} mismatch")
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    x_t = q_sample(x0, t, noise, schedule)
    out = unet(x_t, t, film)
    if prediction == "eps" and snr_gamma is None:  # the official objective, exactly
        return (out - noise).pow(2).flatten(1).mean(dim=1)
    buffers = schedule.official_buffers()
    idx = t.detach().long().cpu()
    sqrt_ab = buffers["sqrt_alphas_cumprod"][idx].to(device=x0.device, dtype=torch.float64)
    sqrt_1m_ab = buffers["sqrt_one_minus_alphas_cumprod"][idx].to(device=x0.device, dtype=torch.float64)
    if prediction == "v":
        target = (append_dims(sqrt_ab, x0.ndim) * noise - append_dims(sqrt_1m_ab, x0.ndim) * x0).to(out.dtype)
    else:
        target = noise
    loss = (out - target).pow(2).flatten(1).mean(dim=1)
    if snr_gamma is None:
        return loss
    if not snr_gamma > 0:
        raise ValueError(f"snr_gamma must be > 0 or None, got {snr_gamma}")
    snr = (sqrt_ab / sqrt_1m_ab) ** 2
    weight = snr.clamp(max=snr_gamma) / (snr + 1.0 if prediction == "v" else snr)
    return loss * weight.to(loss.dtype)


def sample_timesteps(batch: int, num_timesteps: int, generator: torch.Generator,
                     device: torch.device | str = "cpu") -> Tensor:
    """Training timesteps ``t ~ UniformInt[0, T)``.

    Returns:
        int64 ``[batch]`` on ``device`` (drawn on the generator's device).
    """
    t = torch.randint(0, num_timesteps, (batch,), generator=generator, device=generator.device)
    return t.to(device)


def cfg_dropout(film: Tensor, uncond_film: Tensor, p: float, generator: torch.Generator) -> Tensor:
    """Classifier-free-guidance dropout: replace each item's embedding by ``uncond_film`` with probability p.

    Args:
        film: conditional embeddings ``[B, D]``.
        uncond_film: the unconditional embedding ``[D]`` or ``[B, D]`` (official: CLAP of "").
        p: drop probability (official 0.1).
        generator: the dropout's own generator (one uniform draw per item).

    Returns:
        ``[B, D]`` embeddings.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be in [0, 1], got {p}")
    u = torch.rand(film.shape[0], generator=generator, device=generator.device).to(film.device)
    drop = append_dims(u < p, film.ndim)
    return torch.where(drop, uncond_film.to(film).expand_as(film), film)
