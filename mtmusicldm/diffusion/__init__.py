"""Diffusion in sigma-space: schedules, denoiser wrappers, samplers, guidance, inpainting and the loss.

The feature stack reads ``inpaint(cfg(EpsDenoiser(unet, schedule), scale), x_known, mask)`` and runs under any
sampler of :data:`SAMPLERS`; :func:`sample_latents` composes it for the common cases.
"""

from mtmusicldm.diffusion.denoiser import Denoiser, EpsDenoiser, EpsModel, append_dims, ve_to_vp, vp_to_ve
from mtmusicldm.diffusion.guidance import cfg
from mtmusicldm.diffusion.inpainting import (
    arrangement_combinations,
    arrangement_mask,
    combination_name,
    expand_mask,
    init_known,
    inpaint,
    replace_known,
    stem_mask,
)
from mtmusicldm.diffusion.losses import cfg_dropout, diffusion_loss, q_sample, sample_timesteps
from mtmusicldm.diffusion.noise import Generators, make_generators, randn_like_per_sample
from mtmusicldm.diffusion.samplers import (
    SAMPLERS,
    STOCHASTIC_SAMPLERS,
    Callback,
    SamplerStep,
    get_ancestral_step,
    sample_ddim,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_euler,
)
from mtmusicldm.diffusion.sampling import sample_latents
from mtmusicldm.diffusion.schedules import (
    DiffusionSchedule,
    alpha_bar_to_sigma,
    get_sigmas_ddim,
    get_sigmas_karras,
    get_timesteps_ddim_uniform,
    sigma_to_alpha_bar,
)

__all__ = [
    "SAMPLERS",
    "STOCHASTIC_SAMPLERS",
    "Callback",
    "Denoiser",
    "DiffusionSchedule",
    "EpsDenoiser",
    "EpsModel",
    "Generators",
    "SamplerStep",
    "alpha_bar_to_sigma",
    "append_dims",
    "arrangement_combinations",
    "arrangement_mask",
    "combination_name",
    "cfg",
    "cfg_dropout",
    "diffusion_loss",
    "expand_mask",
    "get_ancestral_step",
    "get_sigmas_ddim",
    "get_sigmas_karras",
    "get_timesteps_ddim_uniform",
    "init_known",
    "inpaint",
    "make_generators",
    "q_sample",
    "randn_like_per_sample",
    "replace_known",
    "sample_ddim",
    "sample_dpmpp_2m",
    "sample_dpmpp_2m_sde",
    "sample_euler",
    "sample_latents",
    "sample_timesteps",
    "sigma_to_alpha_bar",
    "stem_mask",
    "ve_to_vp",
    "vp_to_ve",
]
