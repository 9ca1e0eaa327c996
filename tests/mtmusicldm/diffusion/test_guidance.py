"""Classifier-free guidance wrapper: official formula and order, one batched call, scale 1 = conditional."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor

from mtmusicldm.diffusion.denoiser import EpsDenoiser, vp_to_ve
from mtmusicldm.diffusion.guidance import cfg
from mtmusicldm.diffusion.schedules import DiffusionSchedule, get_sigmas_ddim
from mtmusicldm.official import load_unet

B, D = 3, 6
SHAPE = (B, 4, 2, 4, 2)


class Recorder:
    """Toy film-dependent denoiser that records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Tensor, Tensor, Tensor | None]] = []

    def __call__(self, x: Tensor, sigma: Tensor, *, film: Tensor | None = None) -> Tensor:
        self.calls.append((x, sigma, film))
        offset = 0.0 if film is None else film.sum(dim=1).reshape(-1, 1, 1, 1, 1)
        return 0.5 * x * torch.tanh(film[:, :1, None, None, None] if film is not None else x) + offset


def _inputs() -> tuple[Tensor, Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(SHAPE, generator=gen)
    sigma = torch.rand(B, generator=gen, dtype=torch.float64) + 0.1
    return x, sigma, torch.randn(B, D, generator=gen), torch.randn(B, D, generator=gen)


def test_scale_one_is_the_conditional_call() -> None:
    x, sigma, film, uncond = _inputs()
    inner = Recorder()
    out = cfg(inner, 1.0)(x, sigma, film=film, uncond_film=uncond)
    assert len(inner.calls) == 1 and inner.calls[0][0].shape == SHAPE  # no doubling
    assert torch.equal(out, Recorder()(x, sigma, film=film))
    # an unconditional model (film=None) works at scale 1
    assert torch.equal(cfg(inner, 1.0)(x, sigma), Recorder()(x, sigma))


@pytest.mark.parametrize("scale", [0.0, 2.0, 3.5])
def test_guidance_formula_single_batched_call(scale: float) -> None:
    x, sigma, film, uncond = _inputs()
    inner = Recorder()
    out = cfg(inner, scale)(x, sigma, film=film, uncond_film=uncond)
    assert len(inner.calls) == 1
    x_in, sigma_in, film_in = inner.calls[0]
    assert torch.equal(x_in, torch.cat([x, x])) and torch.equal(sigma_in, torch.cat([sigma, sigma]))
    assert torch.equal(film_in, torch.cat([uncond, film]))  # official order: [uncond, cond]
    u, c = Recorder()(x, sigma, film=uncond), Recorder()(x, sigma, film=film)
    torch.testing.assert_close(out, u + scale * (c - u), rtol=1e-6, atol=1e-6)
    if scale == 0.0:
        torch.testing.assert_close(out, u)


def test_guidance_errors() -> None:
    x, sigma, film, uncond = _inputs()
    with pytest.raises(ValueError, match="uncond_film"):
        cfg(Recorder(), 2.0)(x, sigma, film=film)
    with pytest.raises(ValueError, match="differ"):
        cfg(Recorder(), 2.0)(x, sigma, film=film, uncond_film=uncond[:1])


def test_golden_first_step_cfg(golden_dir: Path) -> None:
    """The official first DDIM step: eps_uncond, eps_cond, and the guided x0 (= pred_x0[0])."""
    golden = torch.load(golden_dir / "ddim.pt", weights_only=True)
    first = golden["first_step"]
    weights = torch.load(golden_dir / "unet_cond.pt", weights_only=True)["state_dict"]
    schedule = DiffusionSchedule()
    unet = load_unet(weights, golden["unet_config"])
    raw: list[Tensor] = []

    def recording_unet(x: Tensor, t: Tensor, film: Tensor | None) -> Tensor:
        assert torch.equal(t, first["t"]) and torch.equal(film, first["c_in"][:, 0])
        raw.append(unet(x, t, film))
        return raw[-1]

    denoiser = EpsDenoiser(recording_unet, schedule)
    sigma = get_sigmas_ddim(schedule, golden["S"])[:1]
    x = vp_to_ve(golden["x_T"], sigma)
    cond, uncond = golden["cond"][:, 0], golden["uncond"][:, 0]  # (B, 1, 512) -> (B, 512), as the wrapper squeezes
    with torch.inference_mode():
        x0 = cfg(denoiser, golden["unconditional_guidance_scale"])(x, sigma, film=cond, uncond_film=uncond)
    assert len(raw) == 1  # one batched forward of size 2B
    eps_u, eps_c = raw[0].chunk(2)
    for ours, ref in [(eps_c, first["eps_cond"]), (eps_u, first["eps_uncond"])]:
        torch.testing.assert_close(ours, ref, rtol=0, atol=1e-5 * float(ref.abs().max()))
    ref_x0 = golden["pred_x0"][0]
    torch.testing.assert_close(x0, ref_x0, rtol=0, atol=1e-5 * float(ref_x0.abs().max()))
