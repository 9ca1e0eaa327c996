"""The denoiser protocol and the preconditioning wrapper that turns an eps-UNet into a denoiser.

A denoiser is any callable ``D(x, sigma, **cond) -> x0_hat`` in sigma-space (k-diffusion): ``x`` is a
variance-exploding sample ``x = x0 + sigma * eps`` of shape ``[B, S, C, T, F]``, ``sigma`` is ``[B]``, and
the result estimates ``x0``. Samplers, guidance and inpainting only ever see this protocol.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from mtmusicldm.diffusion.schedules import DiffusionSchedule


class Denoiser(Protocol):
    """``D(x [B, S, C, T, F], sigma [B], **cond) -> x0_hat [B, S, C, T, F]`` in VE coordinates."""

    def __call__(self, x: Tensor, sigma: Tensor, **cond: Any) -> Tensor: ...


EpsModel = Callable[[Tensor, Tensor, Tensor | None], Tensor]
"""``unet(x_vp [B, S, C, T, F], t [B], film [B, 512] | None) -> eps [B, S, C, T, F]``."""


def append_dims(x: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dims so that ``x`` ``[B]`` broadcasts against a rank-``ndim`` tensor."""
    if x.ndim > ndim:
        raise ValueError(f"cannot broadcast a rank-{x.ndim} tensor to rank {ndim}")
    return x.reshape(*x.shape, *([1] * (ndim - x.ndim)))


def _vp_scale(sigma: Tensor, x: Tensor) -> Tensor:
    # sqrt(1 + sigma^2) = 1 / sqrt(alpha_bar), computed in float64, then cast and broadcast to x.
    sigma = torch.as_tensor(sigma, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    return append_dims((1.0 + sigma.to(torch.float64) ** 2).sqrt().to(x.dtype), x.ndim)


def vp_to_ve(x_vp: Tensor, sigma: Tensor | float) -> Tensor:
    """``x_ve = x_vp * sqrt(1 + sigma^2)``.

    Args:
        x_vp: VP sample ``sqrt(abar) x0 + sqrt(1 - abar) eps`` ``[B, ...]``.
        sigma: noise level, scalar or ``[B]``.

    Returns:
        VE sample ``x0 + sigma eps`` ``[B, ...]``.
    """
    return x_vp * _vp_scale(torch.as_tensor(sigma), x_vp)


def ve_to_vp(x_ve: Tensor, sigma: Tensor | float) -> Tensor:
    """``x_vp = x_ve / sqrt(1 + sigma^2)`` (inverse of :func:`vp_to_ve`)."""
    return x_ve / _vp_scale(torch.as_tensor(sigma), x_ve)


def _batch_sigma(sigma: Tensor, x: Tensor) -> Tensor:
    sigma = torch.as_tensor(sigma, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a scalar or [B={x.shape[0]}], got shape {tuple(sigma.shape)}")
    return sigma


class VPredictionEps(nn.Module):
    """A v-prediction UNet seen as an eps model, so that every sampler, guidance and inpainting runs it unchanged.

    With ``x_t = a x0 + a sigma eps`` (VP, ``a = 1 / sqrt(1 + sigma^2) = sqrt(abar)``) and
    ``v = a eps - a sigma x0`` (Salimans & Ho 2022), ``eps = a v + a sigma x_t``. ``sigma(t)`` comes from the
    training schedule (``t_to_sigma``, exact at integer and log-sigma-interpolated at fractional timesteps).

    Args:
        unet: ``unet(x_vp, t, film) -> v``.
        schedule: the training schedule.
    """

    def __init__(self, unet: EpsModel, schedule: DiffusionSchedule) -> None:
        super().__init__()
        self.unet = unet
        self.schedule = schedule

    def forward(self, x: Tensor, t: Tensor, film: Tensor | None = None) -> Tensor:
        """Args: x VP sample [B, S, C, T, F], t [B] (or scalar), film. Returns eps [B, S, C, T, F]."""
        v = self.unet(x, t, film)
        t = torch.as_tensor(t, device=x.device)
        sigma = self.schedule.t_to_sigma(t.expand(x.shape[0]) if t.ndim == 0 else t)
        a = append_dims((1.0 + sigma.to(torch.float64) ** 2).rsqrt(), x.ndim)
        return (a * v.double() + (a * append_dims(sigma.to(torch.float64), x.ndim)) * x.double()).to(v.dtype)


PREDICTIONS: tuple[str, ...] = ("eps", "v")
"""What a UNet can predict: the noise (official) or the velocity ``v``."""


def as_eps_model(unet: EpsModel, prediction: str, schedule: DiffusionSchedule) -> EpsModel:
    """The eps model of a UNet trained to predict `prediction` (one of `PREDICTIONS`)."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    return unet if prediction == "eps" else VPredictionEps(unet, schedule)


class EpsDenoiser(nn.Module):
    """Wrap an eps-prediction UNet with discrete timesteps into a sigma-space denoiser.

    ``D(x, sigma) = x - sigma * eps(x / sqrt(1 + sigma^2), t(sigma))`` where ``t(sigma)`` is the exact
    training timestep when ``sigma`` is a training sigma (DDIM only visits those) and otherwise is
    interpolated in ``log sigma`` (k-diffusion's ``DiscreteEpsDDPMDenoiser``).

    Args:
        unet: ``unet(x_vp, t, film) -> eps`` (see :data:`EpsModel`). A module is registered as a submodule.
        schedule: the training schedule that defines ``sigma <-> t``.
    """

    def __init__(self, unet: EpsModel, schedule: DiffusionSchedule | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.schedule = DiffusionSchedule() if schedule is None else schedule

    def get_eps(self, x: Tensor, sigma: Tensor, film: Tensor | None = None) -> Tensor:
        """Raw network output at a VE sample.

        Args:
            x: VE sample ``[B, S, C, T, F]``.
            sigma: noise level ``[B]`` (or a scalar).
            film: FiLM conditioning ``[B, D]`` or None (unconditional model).

        Returns:
            eps ``[B, S, C, T, F]``.
        """
        sigma = _batch_sigma(sigma, x)
        t = self.schedule.sigma_to_t(sigma)
        return self.unet(ve_to_vp(x, sigma), t, film)

    def forward(self, x: Tensor, sigma: Tensor, *, film: Tensor | None = None) -> Tensor:
        """Denoised estimate ``x0_hat = x - sigma * eps`` ``[B, S, C, T, F]`` (shapes as in :meth:`get_eps`)."""
        sigma = _batch_sigma(sigma, x)
        eps = self.get_eps(x, sigma, film)
        return x - append_dims(sigma.to(x.dtype), x.ndim) * eps
