"""Samplers: shared checks on every registered sampler; DDIM == official update (golden, diffusers); accuracy."""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import Tensor

from mtmusicldm.diffusion.denoiser import EpsDenoiser, ve_to_vp, vp_to_ve
from mtmusicldm.diffusion.noise import make_generators, randn_like_per_sample
from mtmusicldm.diffusion.samplers import (
    DEFAULT_ETA,
    SAMPLERS,
    STOCHASTIC_SAMPLERS,
    SamplerStep,
    get_ancestral_step,
    sample_ddim,
    sample_dpmpp_2m,
    sample_dpmpp_2m_sde,
    sample_euler,
)
from mtmusicldm.diffusion.sampling import sample_latents
from mtmusicldm.diffusion.schedules import DiffusionSchedule, get_sigmas_ddim, get_sigmas_karras, sigma_to_alpha_bar

SHAPE = (2, 4, 3, 8, 4)  # [B, S, C, T, F]
SCHEDULE = DiffusionSchedule()


def _randn(*shape: int, seed: int = 0) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _oracle(x0: Tensor):
    def denoise(x: Tensor, sigma: Tensor, **cond: object) -> Tensor:
        assert sigma.shape == (x.shape[0],)
        return x0.clone()
    return denoise


def _toy_eps(x: Tensor, t: Tensor, film: Tensor | None) -> Tensor:
    """A smooth, nonlinear, timestep-dependent eps model (VP input)."""
    tt = t.to(torch.float32).reshape(-1, 1, 1, 1, 1)
    return 0.4 * torch.tanh(x) * torch.cos(tt / 300.0) + 0.1 * torch.sin(tt / 100.0 + x)


# ---------------------------------------------------------------------------------------------------------------
# Shared checks: every sampler of the registry gets them by being in SAMPLERS (as diffusers' SchedulerCommonTest)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
class TestEverySampler:
    """The contract of a sampler: ``sample(denoiser, x, sigmas, *, cond, generator, callback[, eta]) -> x``."""

    def test_signature_and_eta_knob(self, name: str) -> None:
        params = inspect.signature(SAMPLERS[name]).parameters
        assert list(params)[:3] == ["denoiser", "x", "sigmas"]
        assert {"cond", "generator", "callback"} <= {p for p, v in params.items() if v.kind is v.KEYWORD_ONLY}
        assert ("eta" in params) == (name in STOCHASTIC_SAMPLERS) == (name in DEFAULT_ETA)

    def test_oracle_denoiser_follows_the_exact_path(self, name: str) -> None:
        """D(x, sigma) = x0 exactly. The grid ends at sigma_end > 0 (ending at 0, every sampler returns D's last
        output, whatever its coefficients). Deterministic: the ODE keeps (x - x0) / sigma constant, so the result
        is x0 + (sigma_end / sigma_0)(x - x0). Stochastic: (x - x0) / sigma stays standard normal."""
        shape = (16, *SHAPE[1:])
        x0, eps = _randn(*shape, seed=1).double(), _randn(*shape, seed=2).double()
        sigmas = get_sigmas_ddim(SCHEDULE, 20)  # the official grid, ending at sigma[0] > 0
        x = x0 + float(sigmas[0]) * eps
        for knobs in ([{}, {"eta": 0.0}, {"eta": DEFAULT_ETA[name]}] if name in DEFAULT_ETA else [{}]):
            out = SAMPLERS[name](_oracle(x0), x, sigmas, generator=torch.Generator().manual_seed(3), **knobs)
            residual = (out - x0) / float(sigmas[-1])
            if knobs.get("eta", DEFAULT_ETA.get(name, 0.0)) == 0.0:  # a sampler's default eta applies without one
                torch.testing.assert_close(residual, eps, rtol=0, atol=1e-6)
            else:
                assert abs(residual.std().item() - 1.0) < 0.03 and abs(residual.mean().item()) < 0.03, knobs

    def test_cond_reaches_the_denoiser_and_callback_reports_every_step(self, name: str) -> None:
        denoise, _ = _gaussian_problem()
        seen: list[object] = []

        def with_cond(x: Tensor, sigma: Tensor, **cond: object) -> Tensor:
            seen.append(cond["film"])
            return denoise(x, sigma)

        sigmas = get_sigmas_ddim(SCHEDULE, 8)
        steps: list[SamplerStep] = []
        out = SAMPLERS[name](with_cond, vp_to_ve(_randn(*SHAPE), sigmas[0]), sigmas, cond={"film": "f"},
                             generator=torch.Generator().manual_seed(0), callback=steps.append)
        assert seen == ["f"] * 8 and [s.i for s in steps] == list(range(8))
        assert [s.sigma for s in steps] == sigmas[:-1].tolist() and [s.sigma_next for s in steps] == sigmas[1:].tolist()
        assert steps[-1].x is out and steps[0].denoised.shape == SHAPE and out.dtype == torch.float32

    def test_per_sample_generators_make_items_batch_independent(self, name: str) -> None:
        denoise, _ = _gaussian_problem()
        sigmas = get_sigmas_ddim(SCHEDULE, 10)
        seeds = [11, 22, 33]
        x3 = randn_like_per_sample(torch.empty(3, *SHAPE[1:]), make_generators(seeds))
        out3 = SAMPLERS[name](denoise, vp_to_ve(x3, sigmas[0]), sigmas, generator=make_generators(seeds))
        x1 = randn_like_per_sample(torch.empty(1, *SHAPE[1:]), make_generators(seeds[1:2]))
        out1 = SAMPLERS[name](denoise, vp_to_ve(x1, sigmas[0]), sigmas, generator=make_generators(seeds[1:2]))
        torch.testing.assert_close(out1[0], out3[1], rtol=0, atol=1e-6)
        assert not torch.allclose(out3[0], out3[1], atol=1e-2)
        if name in STOCHASTIC_SAMPLERS:  # the sampler's own noise follows the item's generator
            other = SAMPLERS[name](denoise, vp_to_ve(x1, sigmas[0]), sigmas, generator=make_generators([99]))
            assert not torch.allclose(other[0], out3[1], atol=1e-3)

    def test_keeps_autograd(self, name: str) -> None:
        """No @torch.no_grad inside: gradients flow back to the starting point."""
        denoise, _ = _gaussian_problem()
        sigmas = get_sigmas_ddim(SCHEDULE, 4, final_sigma_zero=True)
        x = _randn(*SHAPE).requires_grad_(True)
        SAMPLERS[name](denoise, x, sigmas, generator=torch.Generator().manual_seed(0)).sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0

    def test_rejects_bad_sigmas(self, name: str) -> None:
        denoise, _ = _gaussian_problem()
        sigmas = get_sigmas_ddim(SCHEDULE, 4)
        with pytest.raises(ValueError, match="decreasing"):
            SAMPLERS[name](denoise, _randn(*SHAPE), sigmas.flip(0), generator=torch.Generator().manual_seed(0))

    def test_runs_the_full_stack(self, name: str) -> None:
        """Through `sample_latents` (EpsDenoiser + CFG + inpainting) with its registry defaults."""
        x_t = _randn(*SHAPE, seed=4)
        known, mask = _randn(*SHAPE, seed=5), torch.tensor([[True, False, False, True]] * SHAPE[0])
        out = sample_latents(_toy_eps, x_t, sampler=name, steps=5, film=torch.zeros(SHAPE[0], 3),
                             uncond_film=torch.ones(SHAPE[0], 3), guidance_scale=2.0, known=known, stem_mask=mask,
                             generator=make_generators([1, 2]))
        assert out.shape == SHAPE and bool(torch.isfinite(out).all())
        assert torch.equal(out[:, 0], known[:, 0]) and torch.equal(out[:, 3], known[:, 3])


# ---------------------------------------------------------------------------------------------------------------
# Oracle denoiser (DDIM on the official grid)


def test_oracle_ddim_eta0_official_grid_is_q_sample_at_t0() -> None:
    """With the official final target abar[0], DDIM(0) returns sqrt(a0) x0 + sqrt(1 - a0) eps_T."""
    x0, x_t = _randn(*SHAPE, seed=1), _randn(*SHAPE, seed=2)
    sigmas = get_sigmas_ddim(SCHEDULE, 20)
    out = ve_to_vp(sample_ddim(_oracle(x0), vp_to_ve(x_t, sigmas[0]), sigmas, eta=0.0), sigmas[-1])
    a_first, a0 = sigma_to_alpha_bar(sigmas[0]), SCHEDULE.alphas_cumprod[0]
    eps_t = (x_t - a_first.sqrt() * x0) / (1 - a_first).sqrt()  # the eps implied by x_T
    expected = a0.sqrt() * x0 + (1 - a0).sqrt() * eps_t
    torch.testing.assert_close(out, expected.float(), rtol=0, atol=1e-5)


def test_oracle_ddim_eta1_official_grid_is_noisy_at_t0() -> None:
    """DDIM(1) adds noise at the last step too: the result is x0 at abar[0] plus N(0, 1 - a0) noise."""
    x0, x_t = _randn(8, 4, 8, 32, 16, seed=1), _randn(8, 4, 8, 32, 16, seed=2)
    sigmas = get_sigmas_ddim(SCHEDULE, 10)
    out = ve_to_vp(sample_ddim(_oracle(x0), vp_to_ve(x_t, sigmas[0]), sigmas, eta=1.0,
                               generator=torch.Generator().manual_seed(0)), sigmas[-1])
    a0 = float(SCHEDULE.alphas_cumprod[0])
    resid = out - math.sqrt(a0) * x0
    assert abs(resid.std().item() / math.sqrt(1 - a0) - 1) < 0.02
    assert abs(resid.mean().item()) < 0.01 * math.sqrt(1 - a0)


# ---------------------------------------------------------------------------------------------------------------
# DDIM == the official update


def test_ancestral_step_is_ddim_eta_variance() -> None:
    abar = SCHEDULE.alphas_cumprod
    for t, t_prev in [(996, 991), (501, 401), (101, 1), (1, 0)]:
        a, a_prev = abar[t], abar[t_prev]
        sigma, sigma_next = float(SCHEDULE.sigmas[t]), float(SCHEDULE.sigmas[t_prev])
        for eta in (0.0, 0.5, 1.0):
            down, up = get_ancestral_step(sigma, sigma_next, eta)
            official = eta * math.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
            assert up * math.sqrt(a_prev) == pytest.approx(official, rel=1e-9, abs=1e-15)
            # deterministic coefficient of eps: sqrt(1 - a_prev - s^2) in VP
            assert down * math.sqrt(a_prev) == pytest.approx(math.sqrt(1 - a_prev - official**2), rel=1e-9)


def test_ddim_replays_golden_trajectory(golden_dir: Path) -> None:
    """Feed the official pred_x0 of each step: the sampler must reproduce the official x_prev (no UNet)."""
    golden = torch.load(golden_dir / "ddim.pt", weights_only=True)
    sigmas = get_sigmas_ddim(SCHEDULE, golden["S"])
    states = [golden["x_T"], *golden["x_prev"]]
    calls: list[int] = []

    def replay(x: Tensor, sigma: Tensor, **cond: object) -> Tensor:
        i = len(calls)
        calls.append(i)
        assert float(sigma[0]) == float(sigmas[i])
        expected_in = vp_to_ve(states[i], sigmas[i])
        torch.testing.assert_close(x, expected_in, rtol=2e-6, atol=1e-5 * float(expected_in.abs().max()))
        return golden["pred_x0"][i]

    steps: list[SamplerStep] = []
    x = sample_ddim(replay, vp_to_ve(golden["x_T"], sigmas[0]), sigmas, eta=0.0, callback=steps.append)
    assert len(calls) == len(steps) == golden["S"]
    for i, step in enumerate(steps):
        ref = golden["x_prev"][i]
        torch.testing.assert_close(ve_to_vp(step.x, step.sigma_next), ref, rtol=0,
                                   atol=2e-6 * float(ref.abs().max()))
    torch.testing.assert_close(ve_to_vp(x, sigmas[-1]), golden["final"], rtol=0,
                               atol=2e-6 * float(golden["final"].abs().max()))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers(eta: float) -> None:
    pytest.importorskip("diffusers")
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195,
                              beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                              steps_offset=1, timestep_spacing="leading", prediction_type="epsilon")
    # diffusers builds the schedule in float32; use the exact values so that only the update rule is compared.
    torch.testing.assert_close(scheduler.alphas_cumprod.double(), SCHEDULE.alphas_cumprod, rtol=1e-5, atol=0)
    scheduler.alphas_cumprod = SCHEDULE.alphas_cumprod.float()
    scheduler.final_alpha_cumprod = SCHEDULE.alphas_cumprod[0].float()
    steps = 10
    scheduler.set_timesteps(steps)
    sigmas = get_sigmas_ddim(SCHEDULE, steps)
    assert torch.equal(SCHEDULE.sigma_to_t(sigmas[:-1]), scheduler.timesteps)

    x_t = _randn(*SHAPE, seed=5)
    zs = [_randn(*SHAPE, seed=100 + i) for i in range(steps)]
    ref, x = [], x_t
    for i, t in enumerate(scheduler.timesteps):
        eps = _toy_eps(x, t.expand(x.shape[0]), None)
        x = scheduler.step(eps, t, x, eta=eta, variance_noise=zs[i]).prev_sample
        ref.append(x)

    it: Iterator[Tensor] = iter(zs)
    ours: list[Tensor] = []
    sample_ddim(EpsDenoiser(_toy_eps, SCHEDULE), vp_to_ve(x_t, sigmas[0]), sigmas, eta=eta,
                noise_sampler=lambda s, s_next: next(it),
                callback=lambda st: ours.append(ve_to_vp(st.x, st.sigma_next)))
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# Solver accuracy on Gaussian data (exact denoiser and exact ODE solution known)


def _gaussian_problem(mu: float = 0.7, s: float = 0.5):
    def denoise(x: Tensor, sigma: Tensor, **cond: object) -> Tensor:
        var = (sigma.to(x.dtype) ** 2).reshape(-1, *([1] * (x.ndim - 1)))
        return mu + s**2 / (s**2 + var) * (x - mu)

    def exact(x_start: Tensor, sigma_start: float, sigma_end: float) -> Tensor:
        return mu + (x_start - mu) * math.sqrt((s**2 + sigma_end**2) / (s**2 + sigma_start**2))

    return denoise, exact


def test_solvers_converge_on_gaussian_ode() -> None:
    """Euler is first order, DPM-Solver++(2M) second order (errors shrink ~2x vs ~4x per halving)."""
    denoise, exact = _gaussian_problem()
    x = _randn(*SHAPE, seed=7).double()
    errors = {}
    for name in ("euler", "dpmpp_2m"):
        for steps in (20, 40, 80):
            sigmas = get_sigmas_karras(steps, 0.03, 80.0)[:-1]  # stop at 0.03: every step a full solver step
            start = x * float(sigmas[0])
            out = SAMPLERS[name](denoise, start, sigmas)
            errors[name, steps] = (out - exact(start, float(sigmas[0]), float(sigmas[-1]))).abs().max().item()
    assert 1.7 < errors["euler", 40] / errors["euler", 80] < 2.5
    assert errors["dpmpp_2m", 40] / errors["dpmpp_2m", 80] > 3.2
    assert errors["dpmpp_2m", 80] < errors["euler", 80] / 10


def test_dpmpp_2m_sde_eta0_equals_dpmpp_2m() -> None:
    denoise, _ = _gaussian_problem()
    sigmas = get_sigmas_ddim(SCHEDULE, 20, final_sigma_zero=True)
    x = vp_to_ve(_randn(*SHAPE, seed=3), sigmas[0])
    a = sample_dpmpp_2m(denoise, x, sigmas)
    b = sample_dpmpp_2m_sde(denoise, x, sigmas, eta=0.0)
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# Against independent transcriptions of k-diffusion's samplers (crowsonkb/k-diffusion, k_diffusion/sampling.py:
# sample_euler, sample_euler_ancestral, sample_dpmpp_2m, sample_dpmpp_2m_sde with solver_type="midpoint"), written
# in its own tensor style (t = -log sigma) rather than ours, with the same noise fed to both.


def _kd_ancestral_step(sigma_from: Tensor, sigma_to: Tensor, eta: float) -> tuple[Tensor, Tensor]:
    if not eta:
        return sigma_to, torch.zeros_like(sigma_to)
    sigma_up = torch.minimum(sigma_to, eta * (sigma_to**2 * (sigma_from**2 - sigma_to**2) / sigma_from**2) ** 0.5)
    return (sigma_to**2 - sigma_up**2) ** 0.5, sigma_up


def _kd_euler_ancestral(model, x, sigmas, eta, noise_sampler):  # eta = 0: k-diffusion's sample_euler
    s_in = x.new_ones([x.shape[0]])
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        sigma_down, sigma_up = _kd_ancestral_step(sigmas[i], sigmas[i + 1], eta)
        d = (x - denoised) / sigmas[i]
        x = x + d * (sigma_down - sigmas[i])
        if sigmas[i + 1] > 0 and eta:
            x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigma_up
    return x


def _kd_dpmpp_2m(model, x, sigmas, eta, noise_sampler):
    s_in = x.new_ones([x.shape[0]])
    old_denoised = None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        t, t_next = -sigmas[i].log(), -sigmas[i + 1].log()
        h = t_next - t
        if old_denoised is None or sigmas[i + 1] == 0:
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * denoised
        else:
            r = (t - -sigmas[i - 1].log()) / h
            x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * ((1 + 1 / (2 * r)) * denoised
                                                                  - (1 / (2 * r)) * old_denoised)
        old_denoised = denoised
    return x


def _kd_dpmpp_2m_sde(model, x, sigmas, eta, noise_sampler):
    s_in = x.new_ones([x.shape[0]])
    old_denoised, h_last, h = None, None, None
    for i in range(len(sigmas) - 1):
        denoised = model(x, sigmas[i] * s_in)
        if sigmas[i + 1] == 0:
            x = denoised
        else:
            t, s = -sigmas[i].log(), -sigmas[i + 1].log()
            h = s - t
            eta_h = eta * h
            x = sigmas[i + 1] / sigmas[i] * (-eta_h).exp() * x + (-h - eta_h).expm1().neg() * denoised
            if old_denoised is not None:
                r = h_last / h
                x = x + 0.5 * (-h - eta_h).expm1().neg() * (1 / r) * (denoised - old_denoised)
            if eta:
                x = x + noise_sampler(sigmas[i], sigmas[i + 1]) * sigmas[i + 1] * (-2 * eta_h).expm1().neg().sqrt()
        old_denoised = denoised
        h_last = h
    return x


@pytest.mark.parametrize(("name", "reference", "eta"), [
    ("euler", _kd_euler_ancestral, 0.0), ("ddim", _kd_euler_ancestral, 0.0), ("ddim", _kd_euler_ancestral, 1.0),
    ("ddim", _kd_euler_ancestral, 0.5), ("dpmpp_2m", _kd_dpmpp_2m, 0.0), ("dpmpp_2m_sde", _kd_dpmpp_2m_sde, 1.0),
    ("dpmpp_2m_sde", _kd_dpmpp_2m_sde, 0.4), ("dpmpp_2m_sde", _kd_dpmpp_2m_sde, 0.0)])
@pytest.mark.parametrize("final_sigma_zero", [False, True])
def test_matches_k_diffusion_transcription(name: str, reference, eta: float, final_sigma_zero: bool) -> None:
    """Same trajectory as the k-diffusion formula, step by step noise included (float64)."""
    denoise = EpsDenoiser(lambda x, t, film: _toy_eps(x, t, film).to(x.dtype), SCHEDULE)
    sigmas = get_sigmas_ddim(SCHEDULE, 12, final_sigma_zero=final_sigma_zero)
    x = vp_to_ve(_randn(*SHAPE, seed=8).double(), sigmas[0])
    zs = [_randn(*SHAPE, seed=200 + i).double() for i in range(len(sigmas))]

    def noise_from_list():
        it = iter(zs)
        return lambda sigma, sigma_next: next(it)

    knobs = {"eta": eta, "noise_sampler": noise_from_list()} if name in STOCHASTIC_SAMPLERS else {}
    ours = SAMPLERS[name](denoise, x, sigmas, **knobs)
    theirs = reference(denoise, x, sigmas.double(), eta, noise_from_list())
    torch.testing.assert_close(ours, theirs, rtol=1e-9, atol=1e-9)


# ---------------------------------------------------------------------------------------------------------------
# Randomness, callbacks, gradients, errors


def test_single_generator_is_deterministic() -> None:
    denoise, _ = _gaussian_problem()
    sigmas = get_sigmas_ddim(SCHEDULE, 5)
    x = vp_to_ve(_randn(*SHAPE), sigmas[0])
    a = sample_ddim(denoise, x, sigmas, eta=1.0, generator=torch.Generator().manual_seed(4))
    b = sample_ddim(denoise, x, sigmas, eta=1.0, generator=torch.Generator().manual_seed(4))
    c = sample_ddim(denoise, x, sigmas, eta=1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_sampler_errors() -> None:
    denoise, _ = _gaussian_problem()
    x = _randn(*SHAPE)
    sigmas = get_sigmas_ddim(SCHEDULE, 4)
    with pytest.raises(ValueError, match="noise"):
        sample_ddim(denoise, x, sigmas, eta=1.0)  # randomness must be explicit
    sample_ddim(denoise, x, sigmas, eta=0.0)  # deterministic: no generator needed
    with pytest.raises(ValueError, match="decreasing"):
        sample_ddim(denoise, x, sigmas.flip(0), eta=0.0)
    with pytest.raises(ValueError):
        sample_ddim(denoise, x, sigmas[:1], eta=0.0)
    with pytest.raises(ValueError, match="generators"):
        sample_ddim(denoise, x, sigmas, eta=1.0, generator=make_generators([1, 2, 3]))
