"""Public sampling entry point: UNet -> EpsDenoiser -> cfg -> inpaint -> sampler, in one call.

``inpaint(cfg(EpsDenoiser(unet, schedule), s), x_known, mask)`` is the whole feature stack; any sampler in
:data:`~mtmusicldm.diffusion.samplers.SAMPLERS` runs it unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from mtmusicldm.diffusion.denoiser import Denoiser, EpsDenoiser, EpsModel, ve_to_vp, vp_to_ve
from mtmusicldm.diffusion.guidance import cfg
from mtmusicldm.diffusion.inpainting import NoiseMode, inpaint, init_known, replace_known
from mtmusicldm.diffusion.noise import Generators
from mtmusicldm.diffusion.samplers import (
    DEFAULT_ETA,
    OFFICIAL_FINAL_SIGMA,
    SAMPLERS,
    STOCHASTIC_SAMPLERS,
    Callback,
    SamplerStep,
)
from mtmusicldm.diffusion.schedules import DiffusionSchedule, get_sigmas_ddim


def _progress(callback: Callback | None, total: int) -> tuple[Callback | None, Callable[[], None]]:
    from tqdm.auto import tqdm  # optional dependency of the progress bar only

    bar = tqdm(total=total, desc="sampling", leave=False)

    def step(info: SamplerStep) -> None:
        bar.update(1)
        if callback is not None:
            callback(info)

    return step, bar.close


def sample_latents(unet: EpsModel, noise: Tensor, *, sampler: str = "ddim", steps: int = 200,
                   eta: float | None = None, film: Tensor | None = None, uncond_film: Tensor | None = None,
                   guidance_scale: float = 1.0, known: Tensor | None = None, stem_mask: Tensor | None = None,
                   noise_mode: NoiseMode = "fresh", replace_known_at_end: bool = True,
                   final_sigma_zero: bool | None = None, generator: Generators | None = None,
                   schedule: DiffusionSchedule | None = None, callback: Callback | None = None,
                   progress: bool = False) -> Tensor:
    """Generate stacked-stem latents (total generation or arrangement) with the official DDIM by default.

    Args:
        unet: ``unet(x_vp [B, S, C, T, F], t [B], film [B, D] | None) -> eps``.
        noise: standard-normal VP ``x_T`` ``[B, S, C, T, F]`` (the official ``torch.randn`` start).
        sampler: a key of ``SAMPLERS`` (``"ddim"``, ``"euler"``, ``"dpmpp_2m"``, ``"dpmpp_2m_sde"``).
        steps: number of sampling steps on the official uniform timestep grid.
        eta: stochasticity for ``"ddim"``/``"dpmpp_2m_sde"`` (None: ``DEFAULT_ETA``, 1.0); a nonzero value
            for a deterministic sampler is an error.
        film: conditioning ``[B, D]`` (CLAP embedding) or None for the unconditional model.
        uncond_film: unconditional embedding ``[B, D]``; required when ``guidance_scale != 1``.
        guidance_scale: classifier-free guidance scale (official: 2.0 generation, 1.0 inpainting).
        known: clean latents ``[B, S, C, T, F]`` of the known stems (arrangement); needs ``stem_mask``.
        stem_mask: known mask, True = keep: ``[B, S]``, ``[B, S, T]`` or ``[B, S, C, T, F]``.
        noise_mode: inpainting re-noising, ``"fresh"`` (official) or ``"fixed"`` (reuses ``noise``).
        replace_known_at_end: set the known entries of the result to ``known`` exactly (the official code
            does not; it replaces the stems in the waveform domain).
        final_sigma_zero: end the grid at sigma 0 (None: False for ``"ddim"`` as the official sampler, which
            stops at ``abar[0]``; True otherwise).
        generator: one generator or one per item (sampler noise and fresh inpainting noise).
        schedule: training schedule (default: official).
        callback: called with each :class:`SamplerStep` (VE ``x`` and ``denoised``).
        progress: show a tqdm progress bar.

    Returns:
        final VP latents ``[B, S, C, T, F]``: ``ve_to_vp(x, sigmas[-1])`` (for the official DDIM grid this is the
        last ``x_prev`` at ``abar[0]``; with a final sigma of 0 it is the clean estimate).
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose from {sorted(SAMPLERS)}")
    if noise.ndim != 5:
        raise ValueError(f"noise must be [B, S, C, T, F], got shape {tuple(noise.shape)}")
    if (known is None) != (stem_mask is None):
        raise ValueError("inpainting needs both known= and stem_mask=")
    schedule = DiffusionSchedule() if schedule is None else schedule
    if final_sigma_zero is None:
        final_sigma_zero = sampler not in OFFICIAL_FINAL_SIGMA
    sigmas = get_sigmas_ddim(schedule, steps, final_sigma_zero=final_sigma_zero)

    knobs: dict[str, float] = {}
    if sampler in STOCHASTIC_SAMPLERS:
        knobs["eta"] = DEFAULT_ETA[sampler] if eta is None else float(eta)
    elif eta not in (None, 0.0):
        raise ValueError(f"sampler {sampler!r} is deterministic; eta={eta} is not supported")

    denoiser: Denoiser = cfg(EpsDenoiser(unet, schedule), guidance_scale)
    x = vp_to_ve(noise, sigmas[0])
    if known is not None:
        if known.shape != noise.shape:
            raise ValueError(f"known {tuple(known.shape)} must match noise {tuple(noise.shape)}")
        known = known.to(noise)
        fixed = noise if noise_mode == "fixed" else None
        denoiser = inpaint(denoiser, known, stem_mask, noise_mode=noise_mode, generator=generator, noise=fixed)
        # Start the known entries at known + sigma_0 * noise: a proper q-sample, as the official first step.
        x = init_known(x, known, stem_mask, sigmas[0], noise)

    cond = {"film": film, "uncond_film": uncond_film}
    close: Callable[[], None] = lambda: None  # noqa: E731
    if progress:
        callback, close = _progress(callback, len(sigmas) - 1)
    try:
        x = SAMPLERS[sampler](denoiser, x, sigmas, cond=cond, generator=generator, callback=callback, **knobs)
    finally:
        close()
    out = ve_to_vp(x, sigmas[-1])
    if known is not None and replace_known_at_end:
        out = replace_known(out, known, stem_mask)
    return out
