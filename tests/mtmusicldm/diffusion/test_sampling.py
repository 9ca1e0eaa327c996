"""sample_latents end to end: golden official DDIM + CFG, official inpainting loop, per-sample RNG."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from mtmusicldm.diffusion.denoiser import ve_to_vp
from mtmusicldm.diffusion.inpainting import arrangement_mask, expand_mask
from mtmusicldm.diffusion.noise import make_generators, randn_like_per_sample
from mtmusicldm.diffusion.samplers import SamplerStep
from mtmusicldm.diffusion.sampling import sample_latents
from mtmusicldm.diffusion.schedules import DiffusionSchedule, get_timesteps_ddim_uniform
from mtmusicldm.official import load_unet

SHAPE = (2, 4, 3, 8, 4)  # [B, S, C, T, F]
SCHEDULE = DiffusionSchedule()


def _randn(*shape: int, seed: int) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def toy_unet(x: Tensor, t: Tensor, film: Tensor | None) -> Tensor:
    """Nonlinear eps model that mixes stems (so known stems influence generated ones) and uses film."""
    tt = t.to(torch.float32).reshape(-1, 1, 1, 1, 1)
    mix = x.mean(dim=1, keepdim=True)
    out = 0.5 * torch.tanh(x + mix) * torch.cos(tt / 400.0) + 0.1 * torch.sin(tt / 150.0)
    if film is not None:
        out = out + 0.2 * torch.tanh(film[:, :1]).reshape(-1, 1, 1, 1, 1)
    return out


@pytest.mark.slow
def test_golden_ddim_cfg_trajectory(golden_dir: Path) -> None:
    """Official DDIM(eta=0), 10 steps, CFG 2.0 on the tiny golden UNet: every x_prev, pred_x0 and final."""
    golden = torch.load(golden_dir / "ddim.pt", weights_only=True)
    weights = torch.load(golden_dir / "unet_cond.pt", weights_only=True)["state_dict"]
    unet = load_unet(weights, golden["unet_config"])
    steps: list[SamplerStep] = []
    with torch.inference_mode():
        final = sample_latents(unet, golden["x_T"], sampler="ddim", steps=golden["S"], eta=golden["eta"],
                               film=golden["cond"][:, 0], uncond_film=golden["uncond"][:, 0],
                               guidance_scale=golden["unconditional_guidance_scale"], callback=steps.append)
    assert len(steps) == golden["S"]
    for i, step in enumerate(steps):
        for ours, ref in [(ve_to_vp(step.x, step.sigma_next), golden["x_prev"][i]),
                          (step.denoised, golden["pred_x0"][i])]:
            torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5 * float(ref.abs().max()))
    ref = golden["final"]
    torch.testing.assert_close(final, ref, rtol=0, atol=1e-5 * float(ref.abs().max()))


def _official_inpaint_loop(x_t: Tensor, x0: Tensor, mask: Tensor, steps: int, eta: float,
                           generator: torch.Generator) -> Tensor:
    """Transcription of the official p_sample_ddim loop (VP, float64 coefficients), q-sample noise = x_T."""
    abar = SCHEDULE.alphas_cumprod
    timesteps = get_timesteps_ddim_uniform(steps).flip(0).tolist()
    prev = [*timesteps[1:], 0]
    m = expand_mask(mask, x_t).to(x_t.dtype)
    img = x_t
    for t, t_prev in zip(timesteps, prev):
        a, a_prev = float(abar[t]), float(abar[t_prev])
        img = (a**0.5 * x0 + (1 - a) ** 0.5 * x_t) * m + (1 - m) * img  # q_sample(x0, t) with fixed noise
        e = toy_unet(img, torch.full((x_t.shape[0],), t), None)
        pred_x0 = (img - (1 - a) ** 0.5 * e) / a**0.5
        s = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)) ** 0.5
        img = a_prev**0.5 * pred_x0 + (1 - a_prev - s**2) ** 0.5 * e
        if s > 0:
            img = img + s * torch.randn(x_t.shape, generator=generator)
    return img


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_inpainting_matches_official_loop(eta: float) -> None:
    x_t, x0 = _randn(*SHAPE, seed=1), _randn(*SHAPE, seed=2)
    mask = arrangement_mask(["guitar"], batch=2)
    ref = _official_inpaint_loop(x_t, x0, mask, 20, eta, torch.Generator().manual_seed(9))
    out = sample_latents(toy_unet, x_t, steps=20, eta=eta, known=x0, stem_mask=mask, noise_mode="fixed",
                         replace_known_at_end=False, generator=torch.Generator().manual_seed(9))
    gen = ~expand_mask(mask, x_t).expand(SHAPE)
    torch.testing.assert_close(out[gen], ref[gen], rtol=1e-5, atol=1e-5)
    # known stems: the official keeps the model's update; we keep a q-sample of x0 at abar[0]: both ~ x0
    known = ~gen
    assert (out[known] - x0[known]).abs().max() < 0.25 and (ref[known] - x0[known]).abs().max() < 0.25
    exact = sample_latents(toy_unet, x_t, steps=20, eta=eta, known=x0, stem_mask=mask, noise_mode="fixed",
                           generator=torch.Generator().manual_seed(9))
    assert torch.equal(exact[known], x0[known]) and torch.equal(exact[gen], out[gen])


def test_per_sample_generators_batch_independent() -> None:
    seeds = [3, 4, 5]
    film, uncond = _randn(3, 16, seed=7), _randn(3, 16, seed=8)
    known = _randn(3, *SHAPE[1:], seed=9)
    mask = arrangement_mask(["bass", "piano"], batch=3)

    def run(idx: slice) -> Tensor:
        gens = make_generators(seeds[idx])
        noise = randn_like_per_sample(known[idx], gens)
        return sample_latents(toy_unet, noise, steps=10, eta=1.0, film=film[idx], uncond_film=uncond[idx],
                              guidance_scale=2.0, known=known[idx], stem_mask=mask[idx], generator=gens)

    out3, out1 = run(slice(0, 3)), run(slice(1, 2))
    torch.testing.assert_close(out1[0], out3[1], rtol=0, atol=1e-6)
    assert not torch.allclose(out3[0], out3[1], atol=1e-2)


@pytest.mark.parametrize("sampler", ["ddim", "euler", "dpmpp_2m", "dpmpp_2m_sde"])
def test_every_sampler_runs(sampler: str) -> None:
    noise = _randn(*SHAPE, seed=0)
    calls: list[SamplerStep] = []
    out = sample_latents(toy_unet, noise, sampler=sampler, steps=5, generator=torch.Generator().manual_seed(0),
                         callback=calls.append, progress=True)
    assert out.shape == SHAPE and torch.isfinite(out).all() and len(calls) == 5
    expected_final = float(SCHEDULE.sigmas[0]) if sampler == "ddim" else 0.0
    assert calls[-1].sigma_next == expected_final


def test_sample_latents_errors() -> None:
    noise = _randn(*SHAPE, seed=0)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample_latents(toy_unet, noise, sampler="plms")
    with pytest.raises(ValueError, match="deterministic"):
        sample_latents(toy_unet, noise, sampler="dpmpp_2m", eta=0.5)
    sample_latents(toy_unet, noise, sampler="dpmpp_2m", eta=0.0, steps=2)  # eta 0 is consistent
    with pytest.raises(ValueError, match="known"):
        sample_latents(toy_unet, noise, known=noise)
    with pytest.raises(ValueError, match="noise"):
        sample_latents(toy_unet, noise, steps=2)  # official eta = 1 needs an explicit generator
    with pytest.raises(ValueError, match="uncond_film"):
        sample_latents(toy_unet, noise, steps=2, eta=0.0, film=_randn(2, 16, seed=1), guidance_scale=2.0)
