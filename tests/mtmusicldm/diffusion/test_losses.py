"""Training loss, forward process, timestep sampling and CFG dropout."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from mtmusicldm.diffusion.losses import cfg_dropout, diffusion_loss, q_sample, sample_timesteps
from mtmusicldm.diffusion.schedules import DiffusionSchedule

SHAPE = (3, 4, 2, 8, 4)
SCHEDULE = DiffusionSchedule()


def _data() -> tuple[Tensor, Tensor, Tensor]:
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(SHAPE, generator=gen)
    noise = torch.randn(SHAPE, generator=gen)
    t = torch.tensor([0, 500, 999])
    return x0, noise, t


def test_loss_is_zero_for_the_true_eps() -> None:
    x0, noise, t = _data()
    seen: dict[str, Tensor | None] = {}

    def perfect(x_t: Tensor, t_in: Tensor, film: Tensor | None) -> Tensor:
        seen["film"], seen["t"] = film, t_in
        return noise

    film = torch.randn(3, 512, generator=torch.Generator().manual_seed(1))
    loss = diffusion_loss(perfect, x0, t, noise, film, SCHEDULE)
    assert loss.shape == (3,) and torch.equal(loss, torch.zeros(3))
    assert seen["film"] is film and torch.equal(seen["t"], t)


def test_loss_is_per_sample_mse() -> None:
    x0, noise, t = _data()
    loss = diffusion_loss(lambda x, tt, f: torch.zeros_like(x), x0, t, noise)
    torch.testing.assert_close(loss, noise.pow(2).mean(dim=(1, 2, 3, 4)))
    # the model sees the official x_t
    loss_xt = diffusion_loss(lambda x, tt, f: x, x0, t, noise)
    x_t = q_sample(x0, t, noise, SCHEDULE)
    torch.testing.assert_close(loss_xt, (x_t - noise).pow(2).mean(dim=(1, 2, 3, 4)))


def test_q_sample_official_formula() -> None:
    x0, noise, t = _data()
    x_t = q_sample(x0, t, noise, SCHEDULE)
    abar = SCHEDULE.alphas_cumprod[t].reshape(-1, 1, 1, 1, 1)
    torch.testing.assert_close(x_t.double(), abar.sqrt() * x0.double() + (1 - abar).sqrt() * noise.double(),
                               rtol=1e-6, atol=1e-6)
    buffers = SCHEDULE.official_buffers()
    expected = (buffers["sqrt_alphas_cumprod"][t].reshape(-1, 1, 1, 1, 1) * x0
                + buffers["sqrt_one_minus_alphas_cumprod"][t].reshape(-1, 1, 1, 1, 1) * noise)
    assert torch.equal(x_t, expected)  # float32 buffers, same arithmetic as the official code
    with pytest.raises(ValueError):
        q_sample(x0, torch.tensor([0, 1, 1000]), noise, SCHEDULE)


def test_sample_timesteps() -> None:
    t = sample_timesteps(4096, 1000, torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.shape == (4096,)
    assert t.min() >= 0 and t.max() <= 999 and t.unique().numel() > 900
    assert torch.equal(t, sample_timesteps(4096, 1000, torch.Generator().manual_seed(0)))
    assert not torch.equal(t, sample_timesteps(4096, 1000, torch.Generator().manual_seed(1)))


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_cfg_dropout_rate_and_determinism(p: float) -> None:
    n = 20000
    film = torch.randn(n, 8, generator=torch.Generator().manual_seed(0)) + 5.0
    uncond = torch.zeros(8)
    out = cfg_dropout(film, uncond, p, torch.Generator().manual_seed(3))
    dropped = (out == 0).all(dim=1)
    kept = (out == film).all(dim=1)
    assert bool((dropped ^ kept).all())  # each row is exactly one or the other
    assert abs(dropped.float().mean().item() - p) < 0.015
    again = cfg_dropout(film, uncond, p, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    other = cfg_dropout(film, uncond, p, torch.Generator().manual_seed(4))
    assert not torch.equal(out, other)


def test_cfg_dropout_edge_cases() -> None:
    film = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    uncond = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(cfg_dropout(film, uncond, 0.0, torch.Generator().manual_seed(0)), film)
    assert torch.equal(cfg_dropout(film, uncond, 1.0, torch.Generator().manual_seed(0)), uncond)
    with pytest.raises(ValueError):
        cfg_dropout(film, uncond, 1.5, torch.Generator())


# ---------------------------------------------------------------------------------------------------- v, min-SNR
def _v_oracle(x0: Tensor, noise: Tensor):
    """A v-model that knows the data: v = sqrt(abar) eps - sqrt(1 - abar) x0 from its own x0 and eps."""
    ab = SCHEDULE.official_buffers()

    def model(x_t: Tensor, t_in: Tensor, film: Tensor | None) -> Tensor:
        a, s = ab["sqrt_alphas_cumprod"][t_in], ab["sqrt_one_minus_alphas_cumprod"][t_in]
        return a.view(-1, 1, 1, 1, 1) * noise - s.view(-1, 1, 1, 1, 1) * x0

    return model


def test_v_prediction_loss_and_its_eps_view() -> None:
    from mtmusicldm.diffusion.denoiser import VPredictionEps, as_eps_model

    x0, noise, t = _data()
    v_model = _v_oracle(x0, noise)
    assert torch.allclose(diffusion_loss(v_model, x0, t, noise, prediction="v"), torch.zeros(3), atol=1e-12)
    assert diffusion_loss(v_model, x0, t, noise)[1:].min() > 0.1  # read as eps it is wrong (v ~ eps at t = 0)
    eps = VPredictionEps(v_model, SCHEDULE)(q_sample(x0, t, noise, SCHEDULE), t)
    torch.testing.assert_close(eps, noise, atol=1e-5, rtol=0)  # the eps view recovers the true noise
    assert as_eps_model(v_model, "eps", SCHEDULE) is v_model
    with pytest.raises(ValueError, match="prediction"):
        as_eps_model(v_model, "x0", SCHEDULE)


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_min_snr_weights_match_diffusers_compute_snr(prediction: str) -> None:
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    x0, noise, t = _data()
    t = torch.tensor([3, 120, 999])
    zero = lambda x, tt, f: torch.zeros_like(x)  # noqa: E731
    plain = diffusion_loss(zero, x0, t, noise, prediction=prediction)
    weighted = diffusion_loss(zero, x0, t, noise, prediction=prediction, snr_gamma=5.0)
    oracle = DDPMScheduler(num_train_timesteps=1000, beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear")
    snr = compute_snr(oracle, t).double()
    expected = snr.clamp(max=5.0) / (snr + 1 if prediction == "v" else snr)
    torch.testing.assert_close((weighted / plain).double(), expected, rtol=1e-4, atol=0)
    assert expected[0] < 0.1 and expected[-1] == pytest.approx(1.0 if prediction == "eps" else snr[-1] / (snr[-1] + 1))
    with pytest.raises(ValueError, match="snr_gamma"):
        diffusion_loss(zero, x0, t, noise, snr_gamma=0.0)


def test_sampling_a_v_model_reaches_its_data_point() -> None:
    """A v-model that knows the only training point, sampled through the eps view, lands on that point."""
    from mtmusicldm.diffusion.denoiser import VPredictionEps
    from mtmusicldm.diffusion.sampling import sample_latents

    target = torch.randn(1, *SHAPE[1:], generator=torch.Generator().manual_seed(3))

    def v_model(x_t: Tensor, t_in: Tensor, film: Tensor | None) -> Tensor:
        sigma = SCHEDULE.t_to_sigma(torch.as_tensor(t_in).reshape(-1)).view(-1, 1, 1, 1, 1).float()
        a = (1 + sigma**2).rsqrt()
        eps = (x_t - a * target) / (a * sigma)
        return a * eps - a * sigma * target

    noise = torch.randn(1, *SHAPE[1:], generator=torch.Generator().manual_seed(4))
    out = sample_latents(VPredictionEps(v_model, SCHEDULE), noise, sampler="dpmpp_2m", steps=10)
    torch.testing.assert_close(out, target, atol=1e-3, rtol=0)
