"""Discrete DDPM noise schedule and the sigma grids that samplers walk along.

Conventions (k-diffusion / EDM): a training timestep ``t`` in ``[0, T)`` has cumulative signal level
``alpha_bar[t]`` and noise level ``sigma[t] = sqrt((1 - alpha_bar[t]) / alpha_bar[t])``. The
variance-preserving (VP) sample ``x_vp = sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps`` and the
variance-exploding (VE) sample ``x_ve = x0 + sigma eps`` are related by ``x_ve = x_vp * sqrt(1 + sigma^2)``.

The official MT-MusicLDM schedule (spec 6) is ``betas = linspace(sqrt(0.0015), sqrt(0.0195), 1000,
float64) ** 2``; the official code calls it "linear", here it is ``"scaled_linear"`` (diffusers' name).
Everything is computed in float64; :meth:`DiffusionSchedule.official_buffers` gives the float32 buffers
stored in official checkpoints (``DDPM.register_schedule``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch
from torch import Tensor

BetaSchedule = Literal["scaled_linear", "linear"]


@dataclass(frozen=True)
class DiffusionSchedule:
    """A discrete ``T``-step beta schedule; all derived tensors are float64 on the CPU.

    Attributes:
        num_timesteps: ``T``, the number of training timesteps.
        beta_start: ``beta[0]``.
        beta_end: ``beta[T - 1]``.
        beta_schedule: ``"scaled_linear"`` (linear in ``sqrt(beta)``, the official one) or ``"linear"``.
    """

    num_timesteps: int = 1000
    beta_start: float = 0.0015
    beta_end: float = 0.0195
    beta_schedule: BetaSchedule = "scaled_linear"

    def __post_init__(self) -> None:
        if self.num_timesteps < 2:
            raise ValueError(f"num_timesteps must be >= 2, got {self.num_timesteps}")
        if not 0.0 < self.beta_start <= self.beta_end < 1.0:
            raise ValueError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start}, {self.beta_end}")
        if self.beta_schedule not in ("scaled_linear", "linear"):
            raise ValueError(f"unknown beta_schedule {self.beta_schedule!r}")

    @cached_property
    def betas(self) -> Tensor:
        """``beta_t`` ``[T]`` float64."""
        n = self.num_timesteps
        if self.beta_schedule == "scaled_linear":
            # torch.linspace in float64, exactly as the official make_beta_schedule.
            return torch.linspace(self.beta_start**0.5, self.beta_end**0.5, n, dtype=torch.float64) ** 2
        return torch.linspace(self.beta_start, self.beta_end, n, dtype=torch.float64)

    @cached_property
    def alphas_cumprod(self) -> Tensor:
        """``alpha_bar_t = prod_{s <= t} (1 - beta_s)`` ``[T]`` float64."""
        return torch.cumprod(1.0 - self.betas, dim=0)

    @cached_property
    def sigmas(self) -> Tensor:
        """``sigma_t = sqrt((1 - alpha_bar_t) / alpha_bar_t)`` ``[T]`` float64, increasing in ``t``."""
        return alpha_bar_to_sigma(self.alphas_cumprod)

    @cached_property
    def log_sigmas(self) -> Tensor:
        """``log sigma_t`` ``[T]`` float64 (strictly increasing)."""
        return self.sigmas.log()

    @property
    def sigma_min(self) -> float:
        """Smallest training noise level ``sigma[0]``."""
        return float(self.sigmas[0])

    @property
    def sigma_max(self) -> float:
        """Largest training noise level ``sigma[T - 1]``."""
        return float(self.sigmas[-1])

    def official_buffers(self) -> dict[str, Tensor]:
        """The float32 schedule buffers of the official ``DDPM.register_schedule`` (``v_posterior = 0``).

        Returns:
            dict of ``[T]`` float32 tensors keyed as in official checkpoints (``betas``, ``alphas_cumprod``,
            ``alphas_cumprod_prev``, ``sqrt_alphas_cumprod``, ``sqrt_one_minus_alphas_cumprod``,
            ``log_one_minus_alphas_cumprod``, ``sqrt_recip_alphas_cumprod``, ``sqrt_recipm1_alphas_cumprod``,
            ``posterior_variance``, ``posterior_log_variance_clipped``, ``posterior_mean_coef1``,
            ``posterior_mean_coef2``); computed in float64, then cast.
        """
        betas = self.betas
        abar = self.alphas_cumprod
        abar_prev = torch.cat([abar.new_ones(1), abar[:-1]])
        posterior_variance = betas * (1.0 - abar_prev) / (1.0 - abar)
        buffers = {
            "betas": betas,
            "alphas_cumprod": abar,
            "alphas_cumprod_prev": abar_prev,
            "sqrt_alphas_cumprod": abar.sqrt(),
            "sqrt_one_minus_alphas_cumprod": (1.0 - abar).sqrt(),
            "log_one_minus_alphas_cumprod": (1.0 - abar).log(),
            "sqrt_recip_alphas_cumprod": (1.0 / abar).sqrt(),
            "sqrt_recipm1_alphas_cumprod": (1.0 / abar - 1.0).sqrt(),
            "posterior_variance": posterior_variance,
            "posterior_log_variance_clipped": posterior_variance.clamp(min=1e-20).log(),
            "posterior_mean_coef1": betas * abar_prev.sqrt() / (1.0 - abar),
            "posterior_mean_coef2": (1.0 - abar_prev) * (1.0 - betas).sqrt() / (1.0 - abar),
        }
        return {k: v.to(torch.float32) for k, v in buffers.items()}

    def t_to_sigma(self, t: Tensor) -> Tensor:
        """Noise level at (possibly fractional) timesteps, interpolating ``log sigma`` linearly.

        Args:
            t: timesteps ``[...]`` in ``[0, T - 1]`` (integer or float).

        Returns:
            ``sigma(t)`` ``[...]`` float64 on ``t``'s device; exactly ``sigmas[t]`` at integer ``t``.
        """
        device = t.device
        t = t.to(torch.float64).cpu()
        if t.min() < 0 or t.max() > self.num_timesteps - 1:
            raise ValueError(f"timesteps must lie in [0, {self.num_timesteps - 1}]")
        low = t.floor().long().clamp(max=self.num_timesteps - 2)
        w = t - low
        log_sigma = (1.0 - w) * self.log_sigmas[low] + w * self.log_sigmas[low + 1]
        sigma = torch.where(w == 0, self.sigmas[low], log_sigma.exp())  # exact at integer timesteps
        sigma = torch.where(w == 1, self.sigmas[low + 1], sigma)
        return sigma.to(device)

    def sigma_to_t(self, sigma: Tensor, *, quantize_atol: float = 1e-3) -> Tensor:
        """Timestep of a noise level: inverse of :meth:`t_to_sigma` (k-diffusion's ``sigma_to_t``).

        ``t`` is interpolated linearly in ``log sigma`` between neighbouring training sigmas and clamped to
        ``[0, T - 1]``. When every entry lies within ``quantize_atol`` timesteps of an integer (a sampler
        that only visits training timesteps, such as DDIM), the exact integer timesteps are returned.

        Args:
            sigma: noise levels ``[...]`` (positive).
            quantize_atol: distance (in timesteps) under which ``t`` snaps to the nearest integer.

        Returns:
            ``t`` ``[...]``: int64 if all entries snapped, else float32; on ``sigma``'s device.
        """
        device = sigma.device
        log_sigma = sigma.detach().to(torch.float64).cpu().log()
        log_sigmas = self.log_sigmas
        high = torch.searchsorted(log_sigmas, log_sigma).clamp(1, self.num_timesteps - 1)
        low = high - 1
        w = (log_sigma - log_sigmas[low]) / (log_sigmas[high] - log_sigmas[low])
        t = (low.to(torch.float64) + w).clamp(0, self.num_timesteps - 1)
        t_int = t.round()
        if bool(((t - t_int).abs() <= quantize_atol).all()):
            return t_int.long().to(device)
        return t.to(torch.float32).to(device)


def alpha_bar_to_sigma(alpha_bar: Tensor) -> Tensor:
    """``sigma = sqrt((1 - alpha_bar) / alpha_bar)`` (VP signal level -> VE noise level)."""
    return ((1.0 - alpha_bar) / alpha_bar).sqrt()


def sigma_to_alpha_bar(sigma: Tensor) -> Tensor:
    """``alpha_bar = 1 / (1 + sigma^2)`` (inverse of :func:`alpha_bar_to_sigma`)."""
    return 1.0 / (1.0 + sigma**2)


def get_timesteps_ddim_uniform(steps: int, num_timesteps: int = 1000) -> Tensor:
    """Official "uniform" DDIM discretisation: ``arange(0, T, T // steps) + 1`` (ascending).

    Example: 200 steps of ``T = 1000`` give ``[1, 6, ..., 996]``; 10 steps give ``[1, 101, ..., 901]``.

    Args:
        steps: number of sampling steps (``1 <= steps <= T``; ``T`` need not be a multiple of it).
        num_timesteps: ``T``.

    Returns:
        int64 ``[n]`` ascending timesteps (``n == steps`` when ``steps`` divides ``T``, as in the official
        code, which has the same length quirk otherwise).
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"steps must be in [1, {num_timesteps}], got {steps}")
    timesteps = torch.arange(0, num_timesteps, num_timesteps // steps, dtype=torch.int64) + 1
    if timesteps[-1] >= num_timesteps:
        raise ValueError(f"{steps} steps of {num_timesteps} give an out-of-range timestep {int(timesteps[-1])}")
    return timesteps


def get_sigmas_ddim(schedule: DiffusionSchedule, steps: int, *, final_sigma_zero: bool = False) -> Tensor:
    """Descending sigma grid of the official DDIM sampler.

    The grid is ``sigma`` at the uniform timesteps (largest first) followed by the final target. The official
    last step goes to ``alpha_bar[0]`` (``sigma[0] = 0.0388``, i.e. timestep 0), not to a clean sample;
    ``final_sigma_zero=True`` ends at ``sigma = 0`` instead (``alpha_bar = 1``, diffusers'
    ``set_alpha_to_one=True``).

    Args:
        schedule: the training schedule.
        steps: number of sampling steps.
        final_sigma_zero: end at 0 instead of ``sigma[0]``.

    Returns:
        float64 ``[steps + 1]`` strictly decreasing sigmas.
    """
    timesteps = get_timesteps_ddim_uniform(steps, schedule.num_timesteps)
    sigmas = schedule.sigmas[timesteps.flip(0)]
    final = sigmas.new_zeros(1) if final_sigma_zero else schedule.sigmas[:1]
    return torch.cat([sigmas, final])


def get_sigmas_karras(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> Tensor:
    """Karras et al. (2022, eq. 5) sigma grid with a trailing zero.

    Args:
        n: number of steps.
        sigma_min: smallest nonzero sigma (e.g. ``schedule.sigma_min``).
        sigma_max: largest sigma (e.g. ``schedule.sigma_max``).
        rho: warping exponent.

    Returns:
        float64 ``[n + 1]`` decreasing sigmas ending in 0.
    """
    if n < 1 or not 0.0 < sigma_min < sigma_max:
        raise ValueError(f"need n >= 1 and 0 < sigma_min < sigma_max, got {n}, {sigma_min}, {sigma_max}")
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    inv_max, inv_min = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    sigmas = (inv_max + ramp * (inv_min - inv_max)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])
