"""Schedules: official float32 buffers (golden), DDIM grids, sigma <-> t <-> alpha_bar round trips."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mtmusicldm.diffusion.schedules import (
    DiffusionSchedule,
    alpha_bar_to_sigma,
    get_sigmas_ddim,
    get_sigmas_karras,
    get_timesteps_ddim_uniform,
    sigma_to_alpha_bar,
)

BUFFERS = (
    "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod",
    "posterior_variance", "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2",
)


@pytest.fixture(scope="module")
def schedule() -> DiffusionSchedule:
    return DiffusionSchedule()


def test_official_buffers_match_golden_bit_exactly(golden_dir: Path, schedule: DiffusionSchedule) -> None:
    golden = torch.load(golden_dir / "schedule.pt", weights_only=True)
    assert torch.equal(schedule.betas, golden["betas_float64"])
    ours = schedule.official_buffers()
    assert set(BUFFERS) == set(ours)
    for key in BUFFERS:
        assert ours[key].dtype == torch.float32
        assert torch.equal(ours[key], golden[key]), key


def test_ddim_grid_matches_golden(golden_dir: Path, schedule: DiffusionSchedule) -> None:
    golden = torch.load(golden_dir / "ddim.pt", weights_only=True)
    steps = golden["S"]
    timesteps = get_timesteps_ddim_uniform(steps)
    assert torch.equal(timesteps, golden["ddim_timesteps"])
    sigmas = get_sigmas_ddim(schedule, steps)
    abar = sigma_to_alpha_bar(sigmas).float()  # [steps + 1], visiting order
    # ddim_alphas is ascending in t; step i uses index steps-1-i; a_prev of the last step is alphas_cumprod[0].
    torch.testing.assert_close(abar[:-1].flip(0), golden["ddim_alphas"], rtol=1e-6, atol=0)
    torch.testing.assert_close(abar[1:].flip(0), golden["ddim_alphas_prev"], rtol=1e-6, atol=0)
    assert abar[-1] == pytest.approx(0.9985, abs=1e-7)


def test_uniform_timesteps_200() -> None:
    t = get_timesteps_ddim_uniform(200)
    assert t.dtype == torch.int64 and t.numel() == 200
    assert t[0] == 1 and t[-1] == 996 and bool((t.diff() == 5).all())
    with pytest.raises(ValueError):
        get_timesteps_ddim_uniform(0)
    with pytest.raises(ValueError):
        get_timesteps_ddim_uniform(3)  # 0, 333, 666, 999 (+1) -> timestep 1000 out of range


@pytest.mark.parametrize("kind", ["scaled_linear", "linear"])
def test_schedule_is_monotone(kind: str) -> None:
    s = DiffusionSchedule(beta_schedule=kind)
    assert s.betas[0] == pytest.approx(0.0015) and s.betas[-1] == pytest.approx(0.0195)
    assert bool((s.betas.diff() > 0).all())
    assert bool((s.alphas_cumprod.diff() < 0).all())
    assert bool((s.sigmas.diff() > 0).all())
    assert s.sigma_min < s.sigma_max


def test_official_values(schedule: DiffusionSchedule) -> None:
    assert float(schedule.alphas_cumprod[999]) == pytest.approx(1.4230e-4, rel=1e-3)
    assert float(schedule.alphas_cumprod[0]) == pytest.approx(0.9985)


def test_alpha_bar_sigma_round_trip(schedule: DiffusionSchedule) -> None:
    abar = schedule.alphas_cumprod
    torch.testing.assert_close(sigma_to_alpha_bar(alpha_bar_to_sigma(abar)), abar, rtol=1e-12, atol=0)


def test_sigma_to_t_exact_on_training_sigmas(schedule: DiffusionSchedule) -> None:
    t = torch.arange(1000)
    got = schedule.sigma_to_t(schedule.sigmas)
    assert got.dtype == torch.int64 and torch.equal(got, t)
    # float32-rounded training sigmas still snap to the exact integer timestep
    assert torch.equal(schedule.sigma_to_t(schedule.sigmas.float()), t)
    assert torch.equal(schedule.t_to_sigma(t), schedule.sigmas)


def test_sigma_to_t_interpolates(schedule: DiffusionSchedule) -> None:
    gen = torch.Generator().manual_seed(0)
    t = torch.rand(64, generator=gen, dtype=torch.float64) * 999
    t = t[(t - t.round()).abs() > 0.01]
    sigma = schedule.t_to_sigma(t)
    back = schedule.sigma_to_t(sigma)
    assert back.dtype == torch.float32
    torch.testing.assert_close(back.double(), t, rtol=0, atol=1e-4)
    # out-of-range sigmas clamp to the ends
    clamp = schedule.sigma_to_t(torch.tensor([1e-4, 1e4], dtype=torch.float64))
    assert clamp.tolist() == [0, 999]


def test_get_sigmas_ddim(schedule: DiffusionSchedule) -> None:
    sigmas = get_sigmas_ddim(schedule, 200)
    assert sigmas.shape == (201,) and sigmas.dtype == torch.float64
    assert bool((sigmas.diff() < 0).all())
    assert sigmas[0] == schedule.sigmas[996] and sigmas[-2] == schedule.sigmas[1]
    assert sigmas[-1] == schedule.sigmas[0]
    zero = get_sigmas_ddim(schedule, 200, final_sigma_zero=True)
    assert torch.equal(zero[:-1], sigmas[:-1]) and zero[-1] == 0


def test_get_sigmas_karras(schedule: DiffusionSchedule) -> None:
    sigmas = get_sigmas_karras(20, schedule.sigma_min, schedule.sigma_max)
    assert sigmas.shape == (21,) and sigmas[-1] == 0
    assert sigmas[0] == pytest.approx(schedule.sigma_max) and sigmas[-2] == pytest.approx(schedule.sigma_min)
    assert bool((sigmas.diff() < 0).all())
    with pytest.raises(ValueError):
        get_sigmas_karras(10, 1.0, 0.5)


def test_invalid_schedule() -> None:
    with pytest.raises(ValueError):
        DiffusionSchedule(beta_start=0.1, beta_end=0.01)
    with pytest.raises(ValueError):
        DiffusionSchedule(beta_schedule="cosine")  # type: ignore[arg-type]
