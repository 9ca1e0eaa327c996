"""Mel VAE (diffusers AutoencoderKL): config, tiny-model shapes, posterior clamp/sampling, pretrained loading."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL

from mtmusicldm.codec.vae import (
    LOGVAR_MAX,
    LOGVAR_MIN,
    MUSICLDM_HUB_ID,
    build_vae,
    decode,
    encode_moments,
    encode_posterior,
    load_vae_pretrained,
    posterior_from_moments,
    vae_config,
)


@pytest.fixture(scope="module")
def tiny_vae() -> AutoencoderKL:
    torch.manual_seed(0)
    return build_vae(ch=32, num_res_blocks=1)


def test_vae_config_defaults_are_musicldm() -> None:
    cfg = vae_config()
    assert cfg["block_out_channels"] == [128, 256, 512]
    assert cfg["down_block_types"] == ["DownEncoderBlock2D"] * 3
    assert cfg["up_block_types"] == ["UpDecoderBlock2D"] * 3
    assert (cfg["layers_per_block"], cfg["latent_channels"], cfg["norm_num_groups"]) == (2, 8, 32)
    assert (cfg["in_channels"], cfg["out_channels"]) == (1, 1)
    assert cfg["mid_block_add_attention"] and cfg["use_quant_conv"] and cfg["use_post_quant_conv"]


def test_musicldm_size_vae_parameter_count_on_meta() -> None:
    with torch.device("meta"):
        vae = build_vae()
    # manifests/vae.json encoder_decoder_quant_numel; conv-vs-linear attention weights have equal numel
    assert sum(p.numel() for p in vae.parameters()) == 55_376_873
    assert vae.decoder.up_blocks[0].resnets.__len__() == 3  # num_res_blocks + 1 in the decoder


@pytest.mark.parametrize(("n", "t", "f"), [(1, 64, 64), (3, 32, 16)])
def test_tiny_vae_round_trip_shapes(tiny_vae: AutoencoderKL, n: int, t: int, f: int) -> None:
    mel = torch.randn(n, 1, t, f)
    with torch.no_grad():
        moments = encode_moments(tiny_vae, mel)
        mean, logvar = encode_posterior(tiny_vae, mel)
        out = decode(tiny_vae, mean)
    assert moments.shape == (n, 16, t // 4, f // 4)
    assert mean.shape == logvar.shape == (n, 8, t // 4, f // 4)
    assert out.shape == mel.shape
    torch.testing.assert_close(mean, moments[:, :8])


def test_encode_posterior_equals_diffusers_latent_dist(tiny_vae: AutoencoderKL) -> None:
    mel = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        mean, logvar = encode_posterior(tiny_vae, mel)
        dist = tiny_vae.encode(mel).latent_dist
    torch.testing.assert_close(mean, dist.mean, rtol=0, atol=0)
    torch.testing.assert_close(logvar, dist.logvar, rtol=0, atol=0)


def test_shape_errors_name_the_argument(tiny_vae: AutoencoderKL) -> None:
    with pytest.raises(ValueError, match="mel must be"):
        encode_moments(tiny_vae, torch.randn(2, 64, 64))
    with pytest.raises(ValueError, match="z must be"):
        decode(tiny_vae, torch.randn(2, 4, 16, 16))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_posterior_clamp_property(seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    moments = 40.0 * torch.randn(2, 6, 3, 5, generator=gen)
    post = posterior_from_moments(moments)
    assert torch.equal(post.mean, moments[:, :3])
    assert post.logvar.min() >= LOGVAR_MIN and post.logvar.max() <= LOGVAR_MAX
    inside = (moments[:, 3:] > LOGVAR_MIN) & (moments[:, 3:] < LOGVAR_MAX)
    assert torch.equal(post.logvar[inside], moments[:, 3:][inside])
    assert (~inside).any()  # the clamp is exercised
    torch.testing.assert_close(post.std**2, post.var)


def test_posterior_rejects_odd_channels() -> None:
    with pytest.raises(ValueError, match="even channel count"):
        posterior_from_moments(torch.zeros(1, 5, 2, 2))


def test_posterior_sample_uses_the_generator() -> None:
    post = posterior_from_moments(torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(5)))
    a = post.sample(torch.Generator().manual_seed(7))
    b = post.sample(torch.Generator().manual_seed(7))
    c = post.sample(torch.Generator().manual_seed(8))
    eps = torch.randn(post.mean.shape, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(a, post.mean + post.std * eps)  # the official draw, bit for bit


def test_load_vae_pretrained_round_trip(tiny_vae: AutoencoderKL, tmp_path: Path) -> None:
    tiny_vae.save_pretrained(tmp_path / "vae")
    loaded = load_vae_pretrained(str(tmp_path))
    mel = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(encode_moments(loaded, mel), encode_moments(tiny_vae, mel))
    assert not loaded.use_tiling and not loaded.training


def test_load_vae_pretrained_missing_path_says_where_to_get_weights(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=MUSICLDM_HUB_ID):
        load_vae_pretrained(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="empty"):
        load_vae_pretrained(str(tmp_path / "empty"))
