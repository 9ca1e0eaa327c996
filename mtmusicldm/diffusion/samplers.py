"""Samplers: pure functions over a sigma-space denoiser (k-diffusion style).

Every sampler has the signature ``sample_<name>(denoiser, x, sigmas, *, cond=None, generator=None,
callback=None, <knobs>) -> x``. ``x`` is the VE sample at ``sigmas[0]`` (``vp_to_ve(noise, sigmas[0])`` for
standard-normal VP noise ``x_T``) and the result is the VE sample at ``sigmas[-1]``; when ``sigmas[-1] > 0``
use ``ve_to_vp(x, sigmas[-1])`` to get the VP latent that the official DDIM sampler returns. Conditioning
travels as one mapping ``cond`` and is passed to the denoiser as keyword arguments. Samplers never call
``torch.no_grad``: callers choose ``torch.inference_mode()``.

Scalars (sigmas and step coefficients) are handled in float64 on the CPU; ``x`` keeps its dtype and device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mtmusicldm.diffusion.denoiser import Denoiser, ve_to_vp, vp_to_ve
from mtmusicldm.diffusion.noise import Generators, NoiseSampler, default_noise_sampler

__all__ = [
    "DEFAULT_ETA",
    "OFFICIAL_FINAL_SIGMA",
    "SAMPLERS",
    "STOCHASTIC_SAMPLERS",
    "Callback",
    "Sampler",
    "SamplerStep",
    "get_ancestral_step",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_euler",
    "ve_to_vp",
    "vp_to_ve",
]


@dataclass(frozen=True)
class SamplerStep:
    """What a sampler reports after step ``i`` (the move from ``sigma`` to ``sigma_next``).

    Attributes:
        i: step index, ``0 .. len(sigmas) - 2``.
        x: VE sample after the step (at ``sigma_next``) ``[B, S, C, T, F]``.
        sigma: noise level the denoiser was evaluated at.
        sigma_next: noise level of ``x``.
        denoised: the denoiser output ``x0_hat`` at ``sigma`` ``[B, S, C, T, F]``.
    """

    i: int
    x: Tensor
    sigma: float
    sigma_next: float
    denoised: Tensor


Callback = Callable[[SamplerStep], None]
Sampler = Callable[..., Tensor]


def _check_sigmas(sigmas: Tensor | Sequence[float]) -> list[float]:
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).detach().cpu()
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(f"sigmas must be 1-D with at least 2 entries, got shape {tuple(sigmas.shape)}")
    if not bool((sigmas[:-1] > 0).all()) or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError("sigmas must be strictly decreasing and positive except possibly the last (0)")
    if float(sigmas[-1]) < 0:
        raise ValueError("the final sigma must be >= 0")
    return sigmas.tolist()


def _sigma_batch(sigma: float, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), sigma, dtype=torch.float64, device=x.device)


def get_ancestral_step(sigma: float, sigma_next: float, eta: float = 1.0) -> tuple[float, float]:
    """Split a step into a deterministic part to ``sigma_down`` and fresh noise of std ``sigma_up``.

    ``sigma_up = eta * sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2)`` (capped at ``sigma_next``) and
    ``sigma_down = sqrt(sigma_next^2 - sigma_up^2)``. In VP coordinates ``sigma_up * sqrt(abar_next)`` is the
    DDIM(eta) standard deviation ``eta * sqrt((1 - a_next) / (1 - a) * (1 - a / a_next))`` (Song et al. 2021,
    eq. 16), so an ancestral Euler step with these values *is* a DDIM(eta) step.

    Returns:
        ``(sigma_down, sigma_up)``.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if eta == 0 or sigma_next == 0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    sigma_down = math.sqrt(max(sigma_next**2 - sigma_up**2, 0.0))
    return sigma_down, sigma_up


def sample_ddim(denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *,
                cond: Mapping[str, Any] | None = None, eta: float = 1.0,
                generator: Generators | None = None, noise_sampler: NoiseSampler | None = None,
                callback: Callback | None = None) -> Tensor:
    """DDIM(eta) (Song et al. 2021) in sigma-space: ``x <- x0 + (sigma_down / sigma)(x - x0) + sigma_up z``.

    In VP coordinates this is exactly the official update ``x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev -
    s_t^2) eps + s_t z`` (noise is added at every step with ``sigma_next > 0``, including the last one when the
    grid ends at ``sigma[0]`` as the official one does). ``eta = 0`` is the deterministic DDIM / Euler step.

    Args:
        denoiser: ``D(x, sigma [B], **cond) -> x0_hat``.
        x: VE sample at ``sigmas[0]`` ``[B, S, C, T, F]``.
        sigmas: decreasing noise levels ``[N + 1]`` (see ``get_sigmas_ddim``).
        cond: keyword arguments for the denoiser (e.g. ``{"film": ..., "uncond_film": ...}``).
        eta: DDIM stochasticity; 1.0 is the official default, 0.0 is deterministic.
        generator: one generator or one per batch item, for the ``eta > 0`` noise.
        noise_sampler: ``(sigma, sigma_next) -> z``; overrides ``generator``.
        callback: called with a :class:`SamplerStep` after every step.

    Returns:
        VE sample at ``sigmas[-1]`` ``[B, S, C, T, F]``.
    """
    cond = {} if cond is None else cond
    sigma_list = _check_sigmas(sigmas)
    noise = default_noise_sampler(x, generator, noise_sampler)
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list[:-1], sigma_list[1:])):
        denoised = denoiser(x, _sigma_batch(sigma, x), **cond)
        if sigma_next == 0:
            x = denoised
        else:
            sigma_down, sigma_up = get_ancestral_step(sigma, sigma_next, eta)
            x = denoised + (sigma_down / sigma) * (x - denoised)
            if sigma_up > 0:
                x = x + sigma_up * noise(torch.tensor(sigma), torch.tensor(sigma_next))
        if callback is not None:
            callback(SamplerStep(i=i, x=x, sigma=sigma, sigma_next=sigma_next, denoised=denoised))
    return x


def sample_euler(denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *,
                 cond: Mapping[str, Any] | None = None, generator: Generators | None = None,
                 callback: Callback | None = None) -> Tensor:
    """Euler steps on the probability-flow ODE (Karras et al. 2022, Alg. 2 without churn) = DDIM(eta=0).

    ``generator`` is accepted for a uniform signature and unused. Shapes as in :func:`sample_ddim`.
    """
    return sample_ddim(denoiser, x, sigmas, cond=cond, eta=0.0, callback=callback)


def sample_dpmpp_2m(denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *,
                    cond: Mapping[str, Any] | None = None, generator: Generators | None = None,
                    callback: Callback | None = None) -> Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Alg. 2), multistep second order in ``lambda = -log sigma``.

    The first step and a step to ``sigma = 0`` are first order. ``generator`` is unused. Shapes as in
    :func:`sample_ddim`.
    """
    cond = {} if cond is None else cond
    sigma_list = _check_sigmas(sigmas)
    old_denoised: Tensor | None = None
    h_last = 0.0
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list[:-1], sigma_list[1:])):
        denoised = denoiser(x, _sigma_batch(sigma, x), **cond)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            if old_denoised is None:
                d = denoised
            else:
                r = h_last / h
                d = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * old_denoised
            x = (sigma_next / sigma) * x - math.expm1(-h) * d
            h_last = h
        old_denoised = denoised
        if callback is not None:
            callback(SamplerStep(i=i, x=x, sigma=sigma, sigma_next=sigma_next, denoised=denoised))
    return x


def sample_dpmpp_2m_sde(denoiser: Denoiser, x: Tensor, sigmas: Tensor | Sequence[float], *,
                        cond: Mapping[str, Any] | None = None, eta: float = 1.0,
                        generator: Generators | None = None, noise_sampler: NoiseSampler | None = None,
                        callback: Callback | None = None) -> Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022), midpoint variant; ``eta = 0`` equals :func:`sample_dpmpp_2m`.

    Noise is drawn independently per step (no Brownian tree). Shapes and arguments as in :func:`sample_ddim`.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    cond = {} if cond is None else cond
    sigma_list = _check_sigmas(sigmas)
    noise = default_noise_sampler(x, generator, noise_sampler)
    old_denoised: Tensor | None = None
    h_last = 0.0
    for i, (sigma, sigma_next) in enumerate(zip(sigma_list[:-1], sigma_list[1:])):
        denoised = denoiser(x, _sigma_batch(sigma, x), **cond)
        if sigma_next == 0:
            x = denoised
        else:
            h = math.log(sigma) - math.log(sigma_next)
            eta_h = eta * h
            coef = -math.expm1(-h - eta_h)
            x = (sigma_next / sigma) * math.exp(-eta_h) * x + coef * denoised
            if old_denoised is not None:
                x = x + (0.5 * coef * h / h_last) * (denoised - old_denoised)
            if eta > 0:
                z = noise(torch.tensor(sigma), torch.tensor(sigma_next))
                x = x + (sigma_next * math.sqrt(-math.expm1(-2 * eta_h))) * z
            h_last = h
        old_denoised = denoised
        if callback is not None:
            callback(SamplerStep(i=i, x=x, sigma=sigma, sigma_next=sigma_next, denoised=denoised))
    return x


# ---------------------------------------------------------------------------------------------------------------
# Registry: the one list of samplers. `sample.sampler` in params.yaml, the CLI's --sampler, the studio and a
# model's recommended sampler are all checked against it; tests/mtmusicldm/diffusion/test_samplers.py runs the
# shared checks on every entry. A new sampler is a function above plus its entries here.

SAMPLERS: dict[str, Sampler] = {
    "ddim": sample_ddim,
    "euler": sample_euler,
    "dpmpp_2m": sample_dpmpp_2m,
    "dpmpp_2m_sde": sample_dpmpp_2m_sde,
}
"""Sampler registry keyed by the ``sample.sampler`` config value."""

DEFAULT_ETA: dict[str, float] = {"ddim": 1.0, "dpmpp_2m_sde": 1.0}
"""Default ``eta`` of every stochastic sampler (1.0 for DDIM is the official default, spec 7); samplers not listed
are deterministic and take no ``eta``."""

STOCHASTIC_SAMPLERS: frozenset[str] = frozenset(DEFAULT_ETA)
"""Samplers that take an ``eta`` knob (and need noise when ``eta > 0``)."""

OFFICIAL_FINAL_SIGMA: frozenset[str] = frozenset({"ddim"})
"""Samplers whose grid ends at ``sigma[0]`` (``abar[0]``) like the official DDIM; the others end at 0."""
