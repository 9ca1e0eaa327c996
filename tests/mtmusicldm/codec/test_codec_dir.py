"""Codec directory: save/load round trips (VAE + Griffin-Lim / HiFi-GAN) and errors."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from transformers import SpeechT5HifiGan, SpeechT5HifiGanConfig

from mtmusicldm.codec.build import codec_from_params
from mtmusicldm.codec.codec_dir import Codec, codec_sha256, load_codec, sample_posterior, save_codec
from mtmusicldm.codec.vocoder import GriffinLimVocoder, HifiGanVocoder
from mtmusicldm.config import CodecParams
from mtmusicldm.official.hifigan import MUSICLDM_HIFIGAN_CONFIG
from pipeline._common import PROFILES_DIR, load_params

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

TINY_DDCONFIG = {"double_z": True, "z_channels": 8, "resolution": 256, "in_channels": 1, "out_ch": 1, "ch": 32,
                 "ch_mult": [1, 2, 4], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
TINY_HIFIGAN = dict(MUSICLDM_HIFIGAN_CONFIG, upsample_initial_channel=32)


def codec_params(**changes) -> CodecParams:
    return load_params(PROFILES_DIR / "embedded.yaml").codec.replace(**({"kind": "trained", "latent_channels": 8} | changes))


@pytest.fixture(scope="module")
def codec() -> Codec:
    return codec_from_params(codec_params(griffin_lim_iters=2), seed=0)


@pytest.fixture(scope="module")
def wav() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return 0.1 * torch.randn(2, 4, 10240, generator=g)  # [B, S, n], 0.64 s


@pytest.fixture(scope="module")
def tiny_hifigan() -> HifiGanVocoder:
    torch.manual_seed(0)
    cfg = SpeechT5HifiGanConfig(model_in_dim=64, sampling_rate=16000, upsample_initial_channel=32,
                                upsample_rates=[5, 4, 2, 2, 2], upsample_kernel_sizes=[16, 16, 8, 4, 4],
                                resblock_kernel_sizes=[3, 7, 11], resblock_dilation_sizes=[[1, 3, 5]] * 3,
                                normalize_before=False, leaky_relu_slope=0.1)
    return HifiGanVocoder(SpeechT5HifiGan(cfg).eval())


# ------------------------------------------------------------------------------------------------- Codec API


def test_shapes_through_the_codec(codec: Codec, wav: torch.Tensor) -> None:
    with torch.inference_mode():
        mel = codec.audio_to_mel(wav)
        mean, std = codec.posterior(mel)
        z = codec.encode_mel(mel, sample=True, generator=torch.Generator().manual_seed(0))
        rec = codec.decode_mel(z)
        audio = codec.mel_to_audio(rec[:1, :2], n_samples=10240)
    assert mel.shape == (2, 4, 64, 64)  # n // 160 frames (official crop of the 65th)
    assert mean.shape == std.shape == z.shape == (2, 4, 8, 16, 16) and bool((std > 0).all())
    assert codec.latent_shape(10240, 4) == (4, 8, 16, 16)
    assert rec.shape == mel.shape and audio.shape == (1, 2, 10240)


def test_per_item_generators_make_draws_batch_independent() -> None:
    mean, std = torch.zeros(3, 2, 5), torch.ones(3, 2, 5)
    gens = lambda: [torch.Generator().manual_seed(s) for s in (7, 8, 9)]  # noqa: E731
    full = sample_posterior(mean, std, gens())
    alone = sample_posterior(mean[1:2], std[1:2], gens()[1:2])
    assert torch.equal(full[1:2], alone)
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        sample_posterior(mean, std, gens()[:2])


def test_posterior_draws_are_float32_normals_of_each_items_generator() -> None:
    """The stored latents of a seed stay byte-identical: eps of item b is torch.randn(item shape) on generator b."""
    g = torch.Generator().manual_seed(0)
    mean, std = torch.randn(2, 4, 3, 5, generator=g).half(), torch.rand(2, 4, 3, 5, generator=g).half()
    z = sample_posterior(mean, std, [torch.Generator().manual_seed(s) for s in (7, 8)])
    for b, seed in enumerate((7, 8)):
        eps = torch.randn(4, 3, 5, generator=torch.Generator().manual_seed(seed))
        assert z.dtype == torch.float16 and torch.equal(z[b], mean[b] + std[b] * eps.half())
    whole = sample_posterior(mean, std, torch.Generator().manual_seed(7))
    assert torch.equal(whole, mean + std * torch.randn(2, 4, 3, 5, generator=torch.Generator().manual_seed(7)).half())


# ------------------------------------------------------------------------------------------------- round trips


def test_save_load_round_trip_griffin_lim(codec: Codec, wav: torch.Tensor, tmp_path: Path) -> None:
    meta = save_codec(tmp_path / "codec", codec.vae, codec.vocoder, {"mel_l1": 1.5})
    loaded = load_codec(tmp_path / "codec")
    assert meta["format"] == "mtmusicldm-codec" and meta["version"] == 1 and meta["downsample"] == 4
    assert json.loads((tmp_path / "codec" / "codec.json").read_text()) == meta
    assert json.loads((tmp_path / "codec" / "report.json").read_text()) == {"mel_l1": 1.5}
    assert isinstance(loaded.vocoder, GriffinLimVocoder) and loaded.vocoder.n_iter == 2
    assert not (tmp_path / "codec" / "vocoder").exists()
    with torch.inference_mode():
        mel = codec.audio_to_mel(wav)
        for c in (codec, loaded):
            c.vae.eval()
        gen = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
        assert torch.equal(codec.encode_mel(mel, sample=True, generator=gen()),
                           loaded.encode_mel(mel, sample=True, generator=gen()))
        z = codec.encode_mel(mel, sample=False)
        assert torch.equal(codec.decode_mel(z), loaded.decode_mel(z))
        assert torch.equal(codec.mel_to_audio(mel[:1, :1]), loaded.mel_to_audio(mel[:1, :1]))
    # the fingerprint follows codec.json and the weights
    before = codec_sha256(tmp_path / "codec")
    save_codec(tmp_path / "codec", codec.vae, GriffinLimVocoder(n_iter=3))
    assert codec_sha256(tmp_path / "codec") != before


def test_save_load_round_trip_hifigan(codec: Codec, tiny_hifigan: HifiGanVocoder, tmp_path: Path) -> None:
    save_codec(tmp_path / "codec", codec.vae, tiny_hifigan, kind="official")
    loaded = load_codec(tmp_path / "codec")
    assert (tmp_path / "codec" / "vocoder" / "config.json").is_file()
    assert isinstance(loaded.vocoder, HifiGanVocoder) and loaded.info["kind"] == "official"
    mel = torch.randn(1, 2, 8, 64)
    with torch.inference_mode():
        assert torch.equal(loaded.mel_to_audio(mel), tiny_hifigan_audio(tiny_hifigan, mel))


def tiny_hifigan_audio(vocoder: HifiGanVocoder, mel: torch.Tensor) -> torch.Tensor:
    return vocoder(mel.flatten(0, 1)).view(mel.shape[0], mel.shape[1], -1)


# ------------------------------------------------------------------------------------------------- errors


def test_load_errors_name_the_problem(codec: Codec, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="codec directory .* not found"):
        load_codec(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="codec.json not found"):
        load_codec(tmp_path / "empty")
    save_codec(tmp_path / "codec", codec.vae, codec.vocoder)
    meta_path = tmp_path / "codec" / "codec.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps(meta | {"format": "something-else"}))
    with pytest.raises(ValueError, match="expected format 'mtmusicldm-codec'"):
        load_codec(tmp_path / "codec")
    meta_path.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_codec(tmp_path / "codec")
    meta_path.write_text(json.dumps(meta | {"latent_channels": 4}))
    with pytest.raises(ValueError, match="latent_channels=4"):
        load_codec(tmp_path / "codec")
    meta_path.write_text(json.dumps(meta | {"vocoder": {"kind": "hifigan"}}))
    with pytest.raises(FileNotFoundError, match="vocoder/ has no weights"):
        load_codec(tmp_path / "codec")
    meta_path.write_text(json.dumps(meta))
    shutil.rmtree(tmp_path / "codec" / "vae")
    with pytest.raises(FileNotFoundError, match="has no VAE"):
        load_codec(tmp_path / "codec")

