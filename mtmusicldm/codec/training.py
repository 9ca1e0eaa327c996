"""Training the mel VAE on single stems, and the reconstruction metrics of the train_codec report.

Loss (`vae_loss`): the official `LPIPSWithDiscriminator` reduced to the terms that make sense without an image
network, with its normalisation kept so that `kl_weight` has the official meaning:

    L = (1/N) sum_n sum_{t,f} |x - x_hat|  +  kl_weight * (1/N) sum_n KL(N(mu, sigma^2) || N(0, 1))

where x_hat decodes one posterior draw (reparameterised). Dropped: the LPIPS term (a VGG16 ImageNet feature loss,
meaningless for log-mels and a download), the PatchGAN discriminator (starts at step 50k in the official config,
beyond any CPU budget) and the learned output log-variance (initialised at 0, which is what we keep fixed). No
multi-resolution STFT term is used: the VAE sees only log-mels and the vocoder is fixed.

Initialisation: a freshly built VAE's decoder starts near 0 while log-mels sit around -5 (floor ln 1e-5 = -11.5),
so a few hundred Adam steps would be spent just learning that offset. `init_output_bias` sets the decoder's last
bias to the mean log-mel of the first batch (a data-dependent init; architecture unchanged). Not used when
fine-tuning pretrained weights.

Optimiser: AdamW (betas 0.9/0.999, weight decay 0) with a linear warm-up over the first 5 % of the steps, then a
constant learning rate.

Metrics: `mel_l1` (mean absolute log-mel error, natural-log units) and `log_spectral_distance` (dB, STFT 2048/512).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from diffusers import AutoencoderKL
from torch import Tensor

from mtmusicldm.codec.vae import decode, encode_moments, posterior_from_moments

WARMUP_FRACTION = 0.05
LSD_N_FFT = 2048
LSD_HOP = 512
LSD_EPS = 1e-10


# ---------------------------------------------------------------------------------------------------------------
# Loss


@dataclass(frozen=True)
class VaeLoss:
    """One loss evaluation: `loss` (scalar, differentiable) and detached terms for logging."""

    loss: Tensor
    rec_l1: float  # mean |x - x_hat| per mel value
    kl: float  # mean per-item KL (nats)


def vae_loss(vae: AutoencoderKL, mel: Tensor, *, kl_weight: float,
             generator: torch.Generator | None = None) -> VaeLoss:
    """L1 reconstruction (summed per item) + kl_weight * KL, both averaged over the batch (module docstring).

    Args:
        vae: the VAE (train or eval mode).
        mel: [N, 1, T, F] log-mel images.
        kl_weight: weight of the KL term (official 1e-6).
        generator: RNG of the posterior draw (CPU generator; the noise is moved to mel's device).

    Returns:
        `VaeLoss`.
    """
    posterior = posterior_from_moments(encode_moments(vae, mel))
    rec = decode(vae, posterior.sample(generator))
    abs_err = (mel - rec).abs()
    kl = posterior.kl()  # [N]: KL(N(mu, sigma^2) || N(0, 1)) summed over C, T', F' (official posterior.kl())
    loss = abs_err.flatten(1).sum(1).mean() + kl_weight * kl.mean()
    return VaeLoss(loss=loss, rec_l1=float(abs_err.detach().mean()), kl=float(kl.detach().mean()))


# ---------------------------------------------------------------------------------------------------------------
# Training loop


def init_output_bias(vae: AutoencoderKL, mel: Tensor) -> float:
    """Set the decoder's output bias to the mean of `mel` [N, 1, T, F] (in place); returns that mean."""
    value = float(mel.mean())
    with torch.no_grad():
        vae.decoder.conv_out.bias.fill_(value)
    return value


def warmup_factor(step: int, steps: int) -> float:
    """Learning-rate multiplier at 0-based `step`: linear warm-up over 5 % of `steps`, then 1."""
    warmup = max(1, round(WARMUP_FRACTION * steps))
    return min(1.0, (step + 1) / warmup)


def train_vae(vae: AutoencoderKL, batches: Iterator[Tensor], *, steps: int, lr: float, kl_weight: float,
              generator: torch.Generator, log_every: int = 10,
              on_step: Callable[[int, VaeLoss], None] | None = None) -> list[dict[str, float]]:
    """Optimise `vae` in place for `steps` AdamW steps on mel batches.

    Args:
        vae: the VAE; left in eval mode afterwards.
        batches: yields [N, 1, T, F] log-mel batches (at least `steps` of them).
        steps: optimiser steps.
        lr: peak learning rate.
        kl_weight: see `vae_loss`.
        generator: CPU RNG of the posterior draws.
        log_every: keep one history row every this many steps (and the last one).
        on_step: called after each step with (step, loss), e.g. to advance a progress bar.

    Returns:
        History rows `{step, loss, rec_l1, kl, lr}`.
    """
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    vae.train().requires_grad_(True)
    history: list[dict[str, float]] = []
    for step in range(steps):
        mel = next(batches)
        current_lr = lr * warmup_factor(step, steps)
        for group in opt.param_groups:
            group["lr"] = current_lr
        out = vae_loss(vae, mel, kl_weight=kl_weight, generator=generator)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"VAE loss is {float(out.loss)} at step {step} (lr {current_lr:g})")
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            history.append({"step": step, "loss": float(out.loss.detach()), "rec_l1": out.rec_l1, "kl": out.kl,
                            "lr": current_lr})
        if on_step is not None:
            on_step(step, out)
    vae.eval().requires_grad_(False)
    return history


# ---------------------------------------------------------------------------------------------------------------
# Metrics


def mel_l1(reference: Tensor, estimate: Tensor) -> Tensor:
    """Mean absolute log-mel error per item.

    Args:
        reference, estimate: [N, T, F] log-mels.

    Returns:
        [N] in natural-log units.
    """
    if reference.shape != estimate.shape:
        raise ValueError(f"mel shapes differ: {tuple(reference.shape)} vs {tuple(estimate.shape)}")
    return (reference - estimate).abs().flatten(1).mean(1)


def log_spectral_distance(reference: Tensor, estimate: Tensor, *, n_fft: int = LSD_N_FFT,
                          hop: int = LSD_HOP) -> Tensor:
    """Log-spectral distance per item: mean over frames of sqrt(mean over bins of (10 log10(P_ref / P_est))^2).

    Power spectra from a Hann STFT (`n_fft`, `hop`, centred), floored at 1e-10 (as in the audio super-resolution
    literature, e.g. NU-Wave / AudioSR).

    Args:
        reference, estimate: [N, samples] waveforms (same length).

    Returns:
        [N] LSD in dB (0 for identical signals).
    """
    if reference.shape != estimate.shape or reference.ndim != 2:
        raise ValueError(f"need two [N, samples] waveforms of one shape, got {tuple(reference.shape)} and "
                         f"{tuple(estimate.shape)}")
    window = torch.hann_window(n_fft, device=reference.device)

    def power(x: Tensor) -> Tensor:
        spec = torch.stft(x.float(), n_fft, hop_length=hop, window=window, center=True, return_complex=True)
        return spec.abs().square().clamp_min(LSD_EPS)  # [N, bins, frames]

    diff_db = 10.0 * (torch.log10(power(reference)) - torch.log10(power(estimate)))
    return diff_db.square().mean(1).sqrt().mean(1)
