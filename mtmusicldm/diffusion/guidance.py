"""Classifier-free guidance as a denoiser wrapper (same signature in, same signature out)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from mtmusicldm.diffusion.denoiser import Denoiser


def cfg(denoiser: Denoiser, scale: float) -> Denoiser:
    """Classifier-free guidance (Ho & Salimans 2022) exactly as the official ``p_sample_ddim`` (spec 5).

    The returned denoiser takes the keyword arguments ``film`` (conditional embedding ``[B, D]``) and
    ``uncond_film`` (unconditional embedding ``[B, D]``, e.g. the CLAP "" text embedding). For ``scale != 1``
    it makes **one** call on the doubled batch ``x_in = cat([x, x])``, ``sigma_in = cat([sigma, sigma])``,
    ``film_in = cat([uncond_film, film])``, splits the output into ``(u, c)`` and returns ``u + scale (c - u)``.
    Since ``x0 = x - sigma eps`` is affine in ``eps``, this equals the official
    ``eps = eps_u + s (eps_c - eps_u)`` followed by ``pred_x0``. For ``scale == 1`` (or ``uncond_film``
    omitted with ``scale == 1``) it is just the conditional call, without doubling, as in the official code.

    Args:
        denoiser: inner denoiser accepting ``film=``.
        scale: guidance scale ``s``.

    Returns:
        a denoiser ``(x [B, ...], sigma [B], *, film=None, uncond_film=None, **other) -> x0_hat``.
    """
    scale = float(scale)

    def guided(x: Tensor, sigma: Tensor, *, film: Tensor | None = None,
               uncond_film: Tensor | None = None, **other: Any) -> Tensor:
        if scale == 1.0:
            return denoiser(x, sigma, film=film, **other)
        if film is None or uncond_film is None:
            raise ValueError(f"guidance scale {scale} != 1 needs both film= and uncond_film=")
        if uncond_film.shape != film.shape:
            raise ValueError(f"uncond_film {tuple(uncond_film.shape)} and film {tuple(film.shape)} differ")
        sigma = torch.as_tensor(sigma, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        out = denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]),
                       film=torch.cat([uncond_film, film]), **other)
        uncond, cond = out.chunk(2)
        return uncond + scale * (cond - uncond)

    return guided
