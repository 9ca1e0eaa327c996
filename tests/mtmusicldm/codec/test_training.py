"""VAE training loss, loop and reconstruction metrics."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from mtmusicldm.codec.training import (
    init_output_bias,
    log_spectral_distance,
    mel_l1,
    train_vae,
    vae_loss,
    warmup_factor,
)
from mtmusicldm.codec.vae import build_vae, decode, encode_posterior, posterior_from_moments

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture
def tiny_vae():
    torch.manual_seed(0)
    return build_vae(ch=32, num_res_blocks=1)


def test_kl_matches_torch_distributions() -> None:
    g = torch.Generator().manual_seed(0)
    mean, logvar = torch.randn(3, 2, 4, 4, generator=g), torch.randn(3, 2, 4, 4, generator=g)
    expected = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(posterior_from_moments(torch.cat([mean, logvar], 1)).kl(), expected)
    assert torch.equal(posterior_from_moments(torch.zeros(2, 6, 1, 1)).kl(), torch.zeros(2))


def test_vae_loss_is_summed_l1_plus_weighted_kl(tiny_vae) -> None:
    mel = torch.randn(2, 1, 16, 16)
    out = vae_loss(tiny_vae, mel, kl_weight=0.0, generator=torch.Generator().manual_seed(3))
    mean, logvar = encode_posterior(tiny_vae, mel)
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    rec = decode(tiny_vae, mean + (0.5 * logvar).exp() * eps)
    torch.testing.assert_close(out.loss, (mel - rec).abs().sum() / 2)
    assert out.rec_l1 == pytest.approx(float((mel - rec).detach().abs().mean()), rel=1e-5)
    weighted = vae_loss(tiny_vae, mel, kl_weight=0.5, generator=torch.Generator().manual_seed(3))
    assert float(weighted.loss) == pytest.approx(float(out.loss) + 0.5 * weighted.kl, rel=1e-5)
    kl = kl_divergence(Normal(mean, (0.5 * logvar).exp()), Normal(0.0, 1.0)).flatten(1).sum(1).mean()
    assert weighted.kl == pytest.approx(float(kl), rel=1e-5)


def test_warmup_factor() -> None:
    assert [warmup_factor(s, 100) for s in range(6)] == [0.2, 0.4, 0.6, 0.8, 1.0, 1.0]
    assert warmup_factor(0, 1) == 1.0


def test_train_vae_fits_a_fixed_batch_and_is_seeded() -> None:
    mel = -5 + torch.randn(4, 1, 16, 16, generator=torch.Generator().manual_seed(1))

    def train(steps: int) -> tuple[dict, list]:
        torch.manual_seed(0)
        vae = build_vae(ch=32, num_res_blocks=1)
        assert init_output_bias(vae, mel) == pytest.approx(float(mel.mean()))
        hist = train_vae(vae, itertools.repeat(mel), steps=steps, lr=2e-3, kl_weight=1e-6, log_every=1,
                         generator=torch.Generator().manual_seed(0))
        return vae.state_dict(), hist

    weights, history = train(8)
    assert len(history) == 8 and history[-1]["rec_l1"] < 0.9 * history[0]["rec_l1"]
    again, _ = train(8)
    assert all(torch.equal(weights[k], again[k]) for k in weights)


def test_train_vae_reports_divergence(tiny_vae) -> None:
    with pytest.raises(FloatingPointError, match="step 0"):
        train_vae(tiny_vae, itertools.repeat(torch.full((1, 1, 16, 16), float("nan"))), steps=1, lr=1e-3,
                  kl_weight=0.0, generator=torch.Generator())


def test_mel_l1() -> None:
    a = torch.zeros(2, 3, 4)
    assert torch.equal(mel_l1(a, a + 0.5), torch.full((2,), 0.5))
    with pytest.raises(ValueError, match="mel shapes differ"):
        mel_l1(a, a[:1])


def test_log_spectral_distance_properties() -> None:
    x = torch.randn(3, 8000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(log_spectral_distance(x, x), torch.zeros(3))
    # a gain of 2 changes every power bin by 20 log10(2) dB
    torch.testing.assert_close(log_spectral_distance(x, 2 * x), torch.full((3,), 20 * math.log10(2)))
    y = torch.randn(3, 8000, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(log_spectral_distance(x, y), log_spectral_distance(y, x))
    with pytest.raises(ValueError, match="same shape|one shape"):
        log_spectral_distance(x, y[:, :100])
