"""Stacked-stem latents: stem-major ordering, mean vs sample, scaling, chunking, decode shapes."""
from __future__ import annotations

import pytest
import torch
from diffusers import AutoencoderKL
from einops import rearrange

from mtmusicldm.codec.latents import (
    LatentScale,
    decode_stems,
    encode_stems,
    posterior_stems,
    scale_factor_from_latents,
)
from mtmusicldm.codec.vae import build_vae, decode, encode_posterior

B, S, T, F = 2, 4, 32, 16  # small mels for the property tests; test_shapes also runs the 64 x 64 case


@pytest.fixture(scope="module")
def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return build_vae(ch=32, num_res_blocks=1)


@pytest.fixture(scope="module")
def mel() -> torch.Tensor:
    # distinct offsets per (b, s) so a permutation of rows cannot go unnoticed
    base = torch.randn(B, S, T, F, generator=torch.Generator().manual_seed(3))
    return base + torch.arange(B * S, dtype=torch.float32).reshape(B, S, 1, 1)


@pytest.mark.parametrize(("t", "f"), [(64, 64), (T, F)])
def test_shapes(tiny_vae: AutoencoderKL, t: int, f: int) -> None:
    with torch.no_grad():
        z = encode_stems(tiny_vae, torch.randn(B, S, t, f), sample=False)
        out = decode_stems(tiny_vae, z)
    assert z.shape == (B, S, 8, t // 4, f // 4)
    assert out.shape == (B, S, t, f)


def test_encode_is_per_stem_and_stem_major(tiny_vae: AutoencoderKL, mel: torch.Tensor) -> None:
    with torch.no_grad():
        z = encode_stems(tiny_vae, mel, sample=False)
        for b in range(B):
            for s in range(S):
                mean, _ = encode_posterior(tiny_vae, mel[b, s][None, None])
                torch.testing.assert_close(z[b, s], mean[0], atol=1e-5, rtol=1e-5)


def test_decode_is_per_stem(tiny_vae: AutoencoderKL) -> None:
    z = torch.randn(B, S, 8, 8, 4, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        out = decode_stems(tiny_vae, z)
        for b, s in [(0, 0), (0, 3), (1, 2)]:
            torch.testing.assert_close(out[b, s], decode(tiny_vae, z[b, s][None])[0, 0], atol=1e-5, rtol=1e-5)


def test_sample_false_is_mean_and_sample_true_is_seeded(tiny_vae: AutoencoderKL, mel: torch.Tensor) -> None:
    with torch.no_grad():
        mean, std = posterior_stems(tiny_vae, mel)
        z_mean = encode_stems(tiny_vae, mel, sample=False)
        a = encode_stems(tiny_vae, mel, sample=True, generator=torch.Generator().manual_seed(11))
        b = encode_stems(tiny_vae, mel, sample=True, generator=torch.Generator().manual_seed(11))
        c = encode_stems(tiny_vae, mel, sample=True, generator=torch.Generator().manual_seed(12))
    assert torch.equal(z_mean, mean)
    assert torch.equal(a, b) and not torch.equal(a, c)
    # the noise is one draw over rows b*S + s, in that order
    eps = torch.randn(B * S, 8, T // 4, F // 4, generator=torch.Generator().manual_seed(11))
    torch.testing.assert_close(a, mean + std * rearrange(eps, "(b s) c t f -> b s c t f", b=B))


def test_latent_scale_round_trips_through_the_decoder(tiny_vae: AutoencoderKL, mel: torch.Tensor) -> None:
    scale = LatentScale(2.5)
    with torch.no_grad():
        z = encode_stems(tiny_vae, mel, sample=False)
        torch.testing.assert_close(scale.encode(z), 2.5 * z)
        torch.testing.assert_close(decode_stems(tiny_vae, scale.decode(scale.encode(z))), decode_stems(tiny_vae, z),
                                   atol=1e-5, rtol=1e-5)


def test_chunking_does_not_change_values(tiny_vae: AutoencoderKL, mel: torch.Tensor) -> None:
    with torch.no_grad():
        whole = encode_stems(tiny_vae, mel, sample=True, generator=torch.Generator().manual_seed(1))
        chunked = encode_stems(tiny_vae, mel, sample=True, generator=torch.Generator().manual_seed(1), chunk_size=3)
        torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(decode_stems(tiny_vae, whole, chunk_size=3), decode_stems(tiny_vae, whole),
                                   atol=1e-5, rtol=1e-5)


def test_rank_errors(tiny_vae: AutoencoderKL) -> None:
    with pytest.raises(ValueError, match=r"\[B, S, T, F\]"):
        encode_stems(tiny_vae, torch.zeros(2, 64, 64), sample=False)
    with pytest.raises(ValueError, match=r"\[B, S, C, T, F\]"):
        decode_stems(tiny_vae, torch.zeros(2, 8, 16, 16))


@pytest.mark.parametrize("sigma", [0.1, 1.0, 7.0])
def test_scale_factor_is_inverse_unbiased_std(sigma: float) -> None:
    z = sigma * torch.randn(2, 4, 8, 16, 4, generator=torch.Generator().manual_seed(0)) + 3.0
    factor = scale_factor_from_latents(z)
    assert factor == pytest.approx(1.0 / torch.std(z.double()).item(), rel=1e-12)
    scaled = LatentScale.from_latents(z).encode(z)
    assert scaled.std().item() == pytest.approx(1.0, rel=1e-5)
    torch.testing.assert_close(LatentScale(factor).decode(scaled), z)


def test_scale_factor_errors() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        scale_factor_from_latents(torch.ones(1))
    with pytest.raises(ValueError, match="std"):
        scale_factor_from_latents(torch.ones(10))
    with pytest.raises(ValueError, match="scale"):
        LatentScale(0.0)
